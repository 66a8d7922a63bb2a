"""Tables of the consent service.

``consent_event`` is the append-only ledger (see :mod:`services.consent.chain` for the hash chains);
``consent_chain`` holds each subject's chain head; ``consent_state`` is the current state derived
from the ledger in the same transaction as each event, never edited otherwise.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "ConsentChain",
    "ConsentEvent",
    "ConsentState",
    "IdempotencyRecord",
    "LedgerErasurePermit",
    "PublishedNotice",
]


class ConsentChain(SQLModel, table=True):
    """The head of one subject's chain: its length and the hash of its last event."""

    __tablename__ = "consent_chain"

    chain_id: str = Field(primary_key=True, max_length=36)
    subject_id: str | None = Field(default=None, max_length=64, unique=True)
    length: int = 0
    head_hash: str = Field(max_length=64)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class ConsentEvent(SQLModel, table=True):
    """One entry of the consent ledger. The database refuses UPDATE and DELETE on these rows."""

    __tablename__ = "consent_event"
    __table_args__ = (UniqueConstraint("chain_id", "seq", name="uq_consent_event_chain_seq"),)

    id: str = Field(primary_key=True, max_length=36)
    chain_id: str = Field(max_length=36)
    seq: int
    subject_id: str | None = Field(default=None, index=True, max_length=64)
    purpose: str = Field(max_length=100)
    action: str = Field(max_length=20)
    notice_version: int | None = None
    source: str = Field(max_length=80)
    collected_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    evidence: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    personal_salt: str | None = Field(default=None, max_length=32)
    personal_digest: str = Field(max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class ConsentState(SQLModel, table=True):
    """Current state per subject and purpose, derived from the ledger in the same transaction."""

    __tablename__ = "consent_state"
    __table_args__ = (Index("ix_consent_state_audience", "purpose", "status", "subject_id"),)

    subject_id: str = Field(primary_key=True, max_length=64)
    purpose: str = Field(primary_key=True, max_length=100)
    status: str = Field(max_length=20)
    since: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    event_id: str = Field(max_length=36)
    notice_version: int | None = None
    expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class IdempotencyRecord(SQLModel, table=True):
    """The answer to a write made with an ``Idempotency-Key``, replayed when the key comes again."""

    __tablename__ = "idempotency_record"

    key: str = Field(primary_key=True, max_length=256)
    fingerprint: str = Field(max_length=64)
    response: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PublishedNotice(SQLModel, table=True):
    """The fingerprint of a notice version as first published; consents point at these versions."""

    __tablename__ = "published_notice"

    purpose: str = Field(primary_key=True, max_length=100)
    version: int = Field(primary_key=True)
    digest: str = Field(max_length=64)
    first_seen_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class LedgerErasurePermit(SQLModel, table=True):
    """While a row exists here, the ledger triggers let the erasure path redact events.

    The erasure transaction inserts it, redacts and deletes it again before committing, so no other
    transaction ever sees it.
    """

    __tablename__ = "ledger_erasure_permit"

    id: int = Field(primary_key=True)
    reason: str = Field(max_length=200)
