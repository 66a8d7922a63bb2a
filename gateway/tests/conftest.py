"""A freshly migrated gateway database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import MIGRATIONS
from tillit.db import Database
from tillit.testing import BACKENDS, migrated_database


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database
