"""Tables of the preferences service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

__all__ = ["ProfileValue"]


class ProfileValue(SQLModel, table=True):
    """One profile field of one subject, with where and when it came from."""

    __tablename__ = "profile_value"

    subject_id: str = Field(primary_key=True, max_length=64)
    field: str = Field(primary_key=True, max_length=64)
    value: Any = Field(sa_column=Column(JSON, nullable=False))
    source: str = Field(max_length=80)
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
