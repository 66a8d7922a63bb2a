"""Quizzes: definitions as data (``definitions``) and the demo quizzes in ``data/``."""
