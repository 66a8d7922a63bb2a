"""Request sessions: a session that was used is committed and closed; one that was not costs nothing.

Fixed reads and lone writes on PostgreSQL never use their request's session (they take a bare pooled
connection), so the providers skip closing a session that began no transaction and holds nothing.
These tests check that a used session is still closed and every connection goes back to the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tillit.db import (
    BARE_IDLE,
    Database,
    autocommit_connection,
    bare_connection,
    driver_connection,
    provide_read_session,
    provide_session,
)
from tillit.testing import BACKENDS, POSTGRES_URL, require_postgres

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "postgres":
        require_postgres()
        database = Database(POSTGRES_URL)
    else:
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'sessions.sqlite3'}")
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[AsyncSession]:
    closed: list[AsyncSession] = []
    close = AsyncSession.close

    async def spy(self: AsyncSession) -> None:
        closed.append(self)
        await close(self)

    monkeypatch.setattr(AsyncSession, "close", spy)
    return closed


async def _provide(
    provider: Callable[[Any], AsyncIterator[AsyncSession]], database: Database, use: Callable[[AsyncSession], Any]
) -> AsyncSession:
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(database=database)), method="POST")
    provided = provider(request)
    session = await anext(provided)
    await use(session)
    with pytest.raises(StopAsyncIteration):
        await anext(provided)
    return session


async def _nothing(_: AsyncSession) -> None:
    return None


async def _select(session: AsyncSession) -> None:
    await session.exec(text("SELECT 1"))  # type: ignore[call-overload]


async def test_an_unused_session_is_not_closed(database: Database, closes: list[AsyncSession]) -> None:
    await _provide(provide_session, database, _nothing)
    assert closes == []
    read = await _provide(provide_read_session, database, _nothing)
    assert closes == ([read] if database.is_sqlite else [])  # SQLite's read session owns a connection
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_used_session_ends_its_transaction_and_gives_its_connection_back(
    database: Database, closes: list[AsyncSession]
) -> None:
    written = await _provide(provide_session, database, _select)
    assert not written.in_transaction()  # committed: nothing left to close
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    read = await _provide(provide_read_session, database, _select)
    assert read in closes
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_failed_request_rolls_back_and_gives_its_connection_back(
    database: Database, closes: list[AsyncSession]
) -> None:
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(database=database)), method="POST")
    provided = provide_session(request)
    session = await anext(provided)
    await _select(session)
    assert session.in_transaction()
    with pytest.raises(RuntimeError, match="handler failed"):
        await provided.athrow(RuntimeError("handler failed"))
    assert not session.in_transaction()
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_bare_connections_go_back_to_the_pool(database: Database, closes: list[AsyncSession]) -> None:
    if database.is_sqlite:
        pytest.skip("bare pooled connections are PostgreSQL's")

    async def lone_write(session: AsyncSession) -> None:
        driver = await autocommit_connection(session)
        assert driver is not None
        await driver.execute("SELECT 1")

    async def fixed_read(session: AsyncSession) -> None:
        driver = await driver_connection(session)
        assert driver is not None
        await driver.fetchval("SELECT 1")

    for _ in range(3):
        await _provide(provide_session, database, lone_write)
        await _provide(provide_read_session, database, fixed_read)
    assert closes == []
    # One connection served all six: kept idle between loans, still counted as the pool's.
    assert database.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
    await database.dispose()
    assert database.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def _checked_out(database: Database) -> int:
    return database.engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def test_at_most_a_few_bare_connections_stay_idle(pg_database: Database) -> None:
    started = asyncio.Event()

    async def hold() -> None:
        async with bare_connection(pg_database) as driver:
            await driver.fetchval("SELECT 1")
            await started.wait()

    holders = [asyncio.create_task(hold()) for _ in range(BARE_IDLE + 3)]
    await asyncio.sleep(0.2)
    assert _checked_out(pg_database) == BARE_IDLE + 3
    started.set()
    await asyncio.gather(*holders)
    assert _checked_out(pg_database) == BARE_IDLE


async def test_a_bare_connection_whose_user_failed_is_not_kept(pg_database: Database) -> None:
    async def failing_user() -> None:
        async with bare_connection(pg_database) as driver:
            await driver.fetchval("SELECT 1")
            raise RuntimeError("caller failed")

    with pytest.raises(RuntimeError, match="caller failed"):
        await failing_user()
    assert _checked_out(pg_database) == 0


async def test_a_kept_connection_left_in_a_transaction_or_dropped_is_not_lent_again(pg_database: Database) -> None:
    async with bare_connection(pg_database) as driver:
        await driver.execute("BEGIN")
        in_transaction = driver
    assert _checked_out(pg_database) == 0  # discarded, not kept
    assert in_transaction.is_closed()
    async with bare_connection(pg_database) as driver:
        first = driver
    await first.close()  # as if the server had dropped it while it was idle
    async with bare_connection(pg_database) as driver:
        assert driver is not first
        assert await driver.fetchval("SELECT 1") == 1
    assert _checked_out(pg_database) == 1
