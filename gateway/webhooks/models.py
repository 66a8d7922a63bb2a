"""Tables of the webhooks: registrations, deliveries, and how far the change feed was read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = ["FEED_CURSOR", "Webhook", "WebhookCursor", "WebhookDelivery"]

FEED_CURSOR = "consent-changes"


class Webhook(SQLModel, table=True):
    """A channel client's endpoint. The secret is kept as is: every delivery is signed with it."""

    __tablename__ = "webhook"

    id: str = Field(primary_key=True, max_length=36)
    client_id: str = Field(max_length=64, index=True)
    channel: str = Field(max_length=64)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=100)
    event_types: list[str] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class WebhookDelivery(SQLModel, table=True):
    """One change for one webhook; ``payload`` is the exact body every attempt sends."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("webhook_id", "change_seq", name="uq_webhook_delivery_change"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_webhook", "webhook_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    webhook_id: str = Field(sa_column=Column(String(36), ForeignKey("webhook.id", ondelete="CASCADE"), nullable=False))
    change_seq: int = Field(sa_column=Column(BigInteger(), nullable=False))
    event_type: str = Field(max_length=40)
    payload: str = Field(sa_column=Column(Text(), nullable=False))
    status: str = Field(max_length=20)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_attempt_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    delivered_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class WebhookCursor(SQLModel, table=True):
    """The last change-feed position turned into deliveries."""

    __tablename__ = "webhook_cursor"

    name: str = Field(primary_key=True, max_length=40)
    seq: int = Field(sa_column=Column(BigInteger(), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
