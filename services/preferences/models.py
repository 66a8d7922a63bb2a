"""Tables of the preferences service.

Every table here (and ``quiz_session``) holds subject ids and is listed in :data:`SUBJECT_TABLES`,
which erasure walks; a test checks that every table of the migrated database with a ``subject_id`` column is listed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer
from sqlmodel import Field, SQLModel

from services.preferences.quizzes.models import QuizSession

__all__ = ["SUBJECT_TABLES", "ProfileChange", "ProfileSubject", "ProfileValue"]


class ProfileSubject(SQLModel, table=True):
    """One row per subject with a profile: the row writers of that subject lock, and a version."""

    __tablename__ = "profile_subject"

    subject_id: str = Field(primary_key=True, max_length=64)
    version: int = 0
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ProfileValue(SQLModel, table=True):
    """One profile field of one subject, with where and when it came from."""

    __tablename__ = "profile_value"

    subject_id: str = Field(primary_key=True, max_length=64)
    field: str = Field(primary_key=True, max_length=64)
    value: Any = Field(sa_column=Column(JSON, nullable=False))
    source: str = Field(max_length=80)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ProfileChange(SQLModel, table=True):
    """One change of one field, written in the transaction that made it; kept for the subject's export."""

    __tablename__ = "profile_change"
    __table_args__ = (Index("ix_profile_change_subject", "subject_id", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    )
    subject_id: str = Field(max_length=64)
    field: str = Field(max_length=64)
    old_value: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))
    new_value: Any = Field(default=None, sa_column=Column(JSON(none_as_null=True), nullable=True))
    source: str = Field(max_length=80)
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


SUBJECT_TABLES: tuple[type[SQLModel], ...] = (QuizSession, ProfileChange, ProfileValue, ProfileSubject)
"""Every table holding a subject's rows, in the order erasure deletes them."""
