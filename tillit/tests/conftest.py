"""Fixtures shared by the tests of the internal package."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tillit.db import Database
from tillit.testing import POSTGRES_URL, require_postgres


@pytest.fixture
async def pg_database() -> AsyncIterator[Database]:
    """A database on PostgreSQL (schema-less: statements only, no tables), disposed afterwards."""
    require_postgres()
    database = Database(POSTGRES_URL)
    try:
        yield database
    finally:
        await database.dispose()
