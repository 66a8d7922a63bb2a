"""Personalization rules: segment definitions evaluated on profiles the gateway already filtered.

It stores definitions only, never a subject id or a profile.
"""
