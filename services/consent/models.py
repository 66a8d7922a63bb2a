"""Tables of the consent service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

__all__ = ["ConsentEvent", "ConsentState"]


class ConsentEvent(SQLModel, table=True):
    """One entry of the consent ledger; rows are only ever added."""

    __tablename__ = "consent_event"

    id: str = Field(primary_key=True, max_length=36)
    subject_id: str = Field(index=True, max_length=64)
    purpose: str = Field(max_length=100)
    action: str = Field(max_length=20)
    notice_version: int | None = None
    source: str = Field(max_length=80)
    collected_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ConsentState(SQLModel, table=True):
    """Current state per subject and purpose, derived from the ledger in the same transaction."""

    __tablename__ = "consent_state"

    subject_id: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(primary_key=True, max_length=100)
    status: str = Field(max_length=20)
    since: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_id: str = Field(max_length=36)
    notice_version: int | None = None
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
