"""Tables of the rules service: definitions and aggregate counts only, no personal data.

``definition`` keeps every version of every segment, rule and slot (the latest version of a key
is the one in force, unless disabled); ``rules_generation`` is one counter that every change of a
definition bumps, so that each process knows with one tiny query whether its compiled definitions
are current; ``exposure`` counts how often each experiment arm was shown per day — counts, never
who saw what.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Date, DateTime, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["Definition", "Exposure", "Generation"]


class Definition(SQLModel, table=True):
    __tablename__ = "definition"
    __table_args__ = (UniqueConstraint("kind", "key", "version", name="uq_definition_version"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    kind: str = Field(max_length=16)
    key: str = Field(max_length=64)
    version: int
    purpose: str = Field(max_length=100)
    title: str = Field(max_length=200)
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    problem: str | None = Field(default=None, max_length=2000)
    disabled_by: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    changed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class Generation(SQLModel, table=True):
    __tablename__ = "rules_generation"

    id: int = Field(primary_key=True)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class Exposure(SQLModel, table=True):
    __tablename__ = "exposure"

    experiment: str = Field(primary_key=True, max_length=64)
    arm: str = Field(primary_key=True, max_length=64)
    day: date = Field(sa_column=Column(Date, primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
