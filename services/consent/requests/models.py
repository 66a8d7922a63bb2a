"""Tables of the data-subject requests.

``gdpr_request`` holds each request as it stands now; ``version`` grows with every change so a
writer can update only the row it read (the loser of a race changes nothing). ``gdpr_request_history``
keeps every step, numbered by the version it produced.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

__all__ = ["DataSubjectRequest", "DataSubjectRequestStep"]


class DataSubjectRequest(SQLModel, table=True):
    """One request; ``due_at`` is the deadline in force (moved by an extension)."""

    __tablename__ = "gdpr_request"
    __table_args__ = (
        Index("ix_gdpr_request_received", "received_at", "id"),
        Index("ix_gdpr_request_status_due", "status", "due_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    subject_id: str = Field(max_length=64, index=True)
    type: str = Field(max_length=20)
    status: str = Field(max_length=20)
    channel: str = Field(max_length=40)
    details: str | None = Field(default=None, max_length=2000)
    purposes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    due_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    extension_months: int | None = None
    extension_reason: str | None = Field(default=None, max_length=1000)
    extended_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    extended_by: str | None = Field(default=None, max_length=120)
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    resolution: str | None = Field(default=None, max_length=1000)
    version: int = 1
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class DataSubjectRequestStep(SQLModel, table=True):
    """One step of a request's history: its receipt, a status change or the extension."""

    __tablename__ = "gdpr_request_history"

    request_id: str = Field(
        sa_column=Column(
            String(36), ForeignKey("gdpr_request.id", name="fk_gdpr_request_history_request"), primary_key=True
        )
    )
    seq: int = Field(primary_key=True)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=120)
    action: str = Field(max_length=20)
    from_status: str | None = Field(default=None, max_length=20)
    to_status: str = Field(max_length=20)
    note: str | None = Field(default=None, max_length=1000)
    due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
