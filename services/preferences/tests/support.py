"""Helpers of the preferences service's tests: one request's worth of work per call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from services.preferences.repository import ProfileRepository
from services.preferences.schemas import Profile, ProfilePatch
from services.preferences.service import ProfileService
from tillit.db import Database

__all__ = ["decode_patch", "patch", "profile_service", "subject_rows", "subject_tables"]


@asynccontextmanager
async def profile_service(
    database: Database,
    clock: Callable[[], datetime] | None = None,
    repository: type[ProfileRepository] = ProfileRepository,
) -> AsyncIterator[ProfileService]:
    """A service on a session whose transaction commits when the block ends (as a request's does)."""
    async with database.sessionmaker() as session, session.begin():
        service = ProfileService(repository(session))
        if clock is not None:
            service.clock = clock
        yield service


def decode_patch(document: dict[str, Any]) -> ProfilePatch:
    """Decode a body exactly as the service's strict body decoding does (a failure is a 400)."""
    return msgspec.convert(document, type=ProfilePatch, strict=True)


async def patch(
    database: Database, subject: str, fields: dict[str, Any], source: str = "preference_page", **options: Any
) -> Profile:
    async with profile_service(database, **options) as service:
        return await service.patch(subject, decode_patch({"fields": fields, "source": source}))


async def subject_tables(database: Database) -> list[str]:
    """Every table of the migrated database that has a ``subject_id`` column."""

    def tables(connection: Connection) -> list[str]:
        inspector = inspect(connection)
        return sorted(
            name
            for name in inspector.get_table_names(schema=database.schema)
            if any(column["name"] == "subject_id" for column in inspector.get_columns(name, schema=database.schema))
        )

    async with database.engine.connect() as connection:
        return await connection.run_sync(tables)


async def subject_rows(database: Database, subject: str) -> dict[str, int]:
    """Rows holding ``subject`` in every table of the database that has a ``subject_id`` column."""
    counts: dict[str, int] = {}
    async with database.engine.connect() as connection:
        for table in await subject_tables(database):
            query = text(f'SELECT COUNT(*) FROM "{table}" WHERE subject_id = :subject')  # noqa: S608 - names from the catalog
            counts[table] = (await connection.execute(query, {"subject": subject})).scalar_one()
    return counts
