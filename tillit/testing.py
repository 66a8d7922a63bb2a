"""Test support shared by every package's tests: real databases on both backends.

Unit tests of a service's repository and domain logic run against a real SQLite file and a real
PostgreSQL schema (never a mock), each migrated with the service's own Alembic scripts.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest
from sqlalchemy import text

from tillit.db import Database
from tillit.keys import KEY_NAMES, ensure_signing_key
from tillit.migrations import upgrade_to_head

__all__ = [
    "BACKENDS",
    "POSTGRES_URL",
    "fresh_component_environment",
    "http_scope",
    "migrated_database",
    "postgres_available",
    "require_postgres",
]

BACKENDS: Final = ("sqlite", "postgres")
POSTGRES_URL: Final = os.environ.get("TILLIT_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def postgres_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL on a laptop; fail in CI (``CI=true``), where it must run."""
    if postgres_available():
        return
    message = "PostgreSQL does not answer on 127.0.0.1:5432"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must run the PostgreSQL suites", pytrace=False)
    pytest.skip(message)


@asynccontextmanager
async def migrated_database(backend: str, directory: Path, migrations: Path) -> AsyncIterator[Database]:
    """A fresh database on ``backend`` (an SQLite file or a throwaway PostgreSQL schema), migrated."""
    if backend == "postgres":
        require_postgres()
        database = Database(POSTGRES_URL, f"unit_{secrets.token_hex(6)}")
    else:
        database = Database(f"sqlite+aiosqlite:///{directory / 'unit.sqlite3'}")
    try:
        await upgrade_to_head(database, migrations)
        yield database
    finally:
        if database.schema:
            async with database.engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{database.schema}" CASCADE'))
        await database.dispose()


def fresh_component_environment(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No inherited ``TILLIT_*`` setting, ``data_dir`` as the data directory with every key made in it."""
    for name in [name for name in os.environ if name.startswith("TILLIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TILLIT_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TILLIT_LOG_LEVEL", "WARNING")
    for name in KEY_NAMES:
        ensure_signing_key(data_dir / "keys", name)
    return data_dir / "keys"


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]], query: str = "") -> dict[str, Any]:
    """An ASGI HTTP scope as a server builds it, for driving an app without one (tests, in-process benches)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
