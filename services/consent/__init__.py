"""Consent and GDPR records: the consent ledger and the current state derived from it."""
