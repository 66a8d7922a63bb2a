"""A freshly migrated rules database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.rules.tests.support import MIGRATIONS, Rules
from tillit.db import Database
from tillit.testing import BACKENDS, migrated_database


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


@pytest.fixture
def rules(database: Database) -> Rules:
    return Rules(database)
