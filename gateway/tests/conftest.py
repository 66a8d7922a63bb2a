"""A freshly migrated gateway database per test, on SQLite and on PostgreSQL; gateway settings with fresh keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import MIGRATIONS
from tillit.db import Database
from tillit.keys import KEY_NAMES, ensure_signing_key
from tillit.settings import Settings, load_settings
from tillit.testing import BACKENDS, migrated_database


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


@pytest.fixture
async def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [name for name in os.environ if name.startswith("TILLIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TILLIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TILLIT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("TILLIT_WEBHOOK_POLL_SECONDS", "0")
    monkeypatch.setenv("TILLIT_POLICY_RELOAD_SECONDS", "0")
    settings = load_settings("gateway")
    for name in KEY_NAMES:
        ensure_signing_key(settings.keys_dir, name)
    return settings
