"""Tables of the gateway: channel clients and the release audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

__all__ = ["AudienceRelease", "AudienceReleaseSubject", "ChannelClient", "ReleaseRecord"]


class ChannelClient(SQLModel, table=True):
    """An OAuth2 client of one channel; only an argon2 hash of its secret is kept."""

    __tablename__ = "channel_client"

    client_id: str = Field(primary_key=True, max_length=64)
    secret_hash: str = Field(max_length=255)
    channel: str = Field(max_length=64)
    scopes: str = Field(max_length=500)
    disabled: bool = False
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    secret_rotated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    disabled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class ReleaseRecord(SQLModel, table=True):
    """Who received which fields of whom, when, for which purpose and under which consent."""

    __tablename__ = "release_record"

    release_id: str = Field(primary_key=True, max_length=36)
    client_id: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    purpose: str = Field(max_length=100)
    subject_id: str = Field(max_length=64)
    """Looked up through ``ix_release_record_subject_time`` (migration 0004)."""
    released: list[str] = Field(sa_column=Column(JSON, nullable=False))
    withheld: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    consent_event_id: str | None = Field(default=None, max_length=36)
    released_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    outcome: str = Field(default="released", max_length=16)
    """``released`` (fields may still all be withheld) or ``refused`` (purpose not registered: nothing read)."""


class AudienceRelease(SQLModel, table=True):
    """One audience export: who asked for which purpose (and segment), from where, when."""

    __tablename__ = "audience_release"

    release_id: str = Field(primary_key=True, max_length=36)
    client_id: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    purpose: str = Field(max_length=100)
    segment: str | None = Field(default=None, max_length=64)
    resumed_after: str | None = Field(default=None, max_length=64)
    """The subject the export's cursor resumed after; None for an export from the start."""
    started_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class AudienceReleaseSubject(SQLModel, table=True):
    """One subject released in an audience export: its fields, those withheld, the consent relied on."""

    __tablename__ = "audience_release_subject"

    release_id: str = Field(primary_key=True, max_length=36)
    subject_id: str = Field(primary_key=True, index=True, max_length=64)
    released: list[str] = Field(sa_column=Column(JSON, nullable=False))
    withheld: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    consent_event_id: str | None = Field(default=None, max_length=36)
    released_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
