"""The internal services behind the gateway; each is its own process with its own database."""
