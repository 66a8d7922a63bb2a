"""The gateway: the only public entry for personal data, where the release rule is enforced."""
