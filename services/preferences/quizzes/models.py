"""Tables of quizzes: merchandisers' quiz definitions, shoppers' sessions and anonymous counters.

``quiz_session`` holds a subject id (exported and erased with the profile); ``quiz_definition`` and
``quiz_counter`` hold none: the counters are aggregates that outlive the sessions they counted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index
from sqlmodel import Field, SQLModel

__all__ = ["QuizCounter", "QuizDefinitionRow", "QuizSession"]


class QuizDefinitionRow(SQLModel, table=True):
    """A quiz added through the API, kept as the JSON it was validated as."""

    __tablename__ = "quiz_definition"

    quiz_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    definition: Any = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class QuizSession(SQLModel, table=True):
    """One shopper's run through one quiz version; ``revision`` grows with every change (one writer wins)."""

    __tablename__ = "quiz_session"
    __table_args__ = (Index("ix_quiz_session_subject", "subject_id"),)

    id: str = Field(primary_key=True, max_length=36)
    subject_id: str = Field(max_length=64)
    quiz_id: str = Field(max_length=64)
    quiz_version: int
    locale: str = Field(max_length=2)
    status: str = Field(max_length=16)
    current_question: str | None = Field(default=None, max_length=64)
    last_question: str | None = Field(default=None, max_length=64)
    answers: Any = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    traits: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))
    revision: int = 1
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    completed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class QuizCounter(SQLModel, table=True):
    """One anonymous count: ``start``/``complete`` per version, ``answer`` per option bucket, ``last``
    (sessions whose latest answer is this question and that have not completed: the drop-off), kept
    in shards so that concurrent answers do not queue for one row's lock (migration 0004)."""

    __tablename__ = "quiz_counter"

    quiz_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(primary_key=True)
    metric: str = Field(primary_key=True, max_length=16)
    question_id: str = Field(primary_key=True, max_length=64, default="")
    bucket: str = Field(primary_key=True, max_length=64, default="")
    shard: int = Field(primary_key=True, default=0)
    """Which of the counter's rows (writers spread over them; a count is the sum of its shards)."""
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
