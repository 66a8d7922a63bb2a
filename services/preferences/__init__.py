"""Quizzes and preferences: the zero-party-data profile, each value with its provenance."""
