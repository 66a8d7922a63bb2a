"""The consent change feed's table (an outbox filled by triggers on ``consent_state``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime, Integer
from sqlmodel import Field, SQLModel

__all__ = ["ConsentChange"]


class ConsentChange(SQLModel, table=True):
    """One change a channel must act on; ``seq`` is its position in the feed once it has been read."""

    __tablename__ = "consent_change"

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    )
    seq: int | None = Field(default=None, sa_column=Column(BigInteger(), nullable=True, index=True, unique=True))
    event_id: str | None = Field(default=None, max_length=36)
    subject_id: str = Field(max_length=64)
    purpose: str | None = Field(default=None, max_length=100)
    action: str = Field(max_length=20)
    occurred_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
