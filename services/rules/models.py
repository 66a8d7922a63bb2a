"""Tables of the rules service: definitions only, no personal data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

__all__ = ["Segment"]


class Segment(SQLModel, table=True):
    __tablename__ = "segment"

    key: str = Field(primary_key=True, max_length=64)
    title: str = Field(max_length=200)
    purpose: str = Field(max_length=100)
    conditions: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
