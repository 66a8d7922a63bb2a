"""A statement on a bare pooled connection whose server side is gone answers 503, never 500.

Bare connections (:func:`tillit.db.bare_connection`) run asyncpg directly, so its errors arrive
without SQLAlchemy's wrapping; :mod:`tillit.problems` maps those of a dropped or unavailable
database to the same retryable problem as SQLAlchemy's. The dead connection is not lent again.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar, Request, get

from tillit.db import Database, bare_connection, bare_fetch, driver_connection, read_session
from tillit.problems import exception_handlers
from tillit.testing import POSTGRES_URL

pytestmark = pytest.mark.anyio

_PLAIN_DSN = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")


async def _terminate(pid: int) -> None:
    admin = await asyncpg.connect(_PLAIN_DSN)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pid)
    finally:
        await admin.close()


def _app(database: Database) -> Litestar:
    @get("/backend")
    async def backend() -> dict[str, Any]:
        async with bare_connection(database) as driver:
            return {"pid": await driver.fetchval("SELECT pg_backend_pid()")}

    @get("/dropped-midway")
    async def dropped_midway() -> dict[str, Any]:
        async with bare_connection(database) as driver:
            await _terminate(await driver.fetchval("SELECT pg_backend_pid()"))
            return {"never": await driver.fetchval("SELECT 1")}

    @get("/read-session-dropped-midway")
    async def read_session_dropped_midway(request: Request[Any, Any, Any]) -> dict[str, Any]:
        async with read_session(request) as session:
            driver = await driver_connection(session)
            assert driver is not None
            await _terminate(await driver.fetchval("SELECT pg_backend_pid()"))
            return {"never": await driver.fetchval("SELECT 1")}

    @get("/bare-fetch-dropped-midway")
    async def bare_fetch_dropped_midway() -> dict[str, Any]:
        # The backend ends itself while it runs the statement, as a server shutting down would.
        return {"never": await bare_fetch(database, "SELECT pg_terminate_backend(pg_backend_pid()), pg_sleep(5)")}

    app = Litestar(
        [backend, dropped_midway, read_session_dropped_midway, bare_fetch_dropped_midway],
        exception_handlers=exception_handlers,
    )
    app.state.database = database
    return app


async def test_a_connection_dropped_under_a_request_is_a_503_and_the_next_request_reconnects(
    pg_database: Database,
) -> None:
    transport = httpx.ASGITransport(app=_app(pg_database))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.get("/backend")
        assert before.status_code == 200

        for path in ("/dropped-midway", "/read-session-dropped-midway", "/bare-fetch-dropped-midway"):
            dropped = await client.get(path)
            assert dropped.status_code == 503, dropped.text
            assert dropped.headers["content-type"].startswith("application/problem+json")
            assert dropped.headers["retry-after"] == "1"
            assert dropped.json()["type"].endswith("database-unavailable")

            after = await client.get("/backend")
            assert after.status_code == 200
            assert after.json()["pid"] != before.json()["pid"]


async def test_a_connection_dropped_while_idle_is_not_lent_again(pg_database: Database) -> None:
    transport = httpx.ASGITransport(app=_app(pg_database))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.get("/backend")
        await _terminate(before.json()["pid"])
        after = await client.get("/backend")
        assert after.status_code == 200, after.text
        assert after.json()["pid"] != before.json()["pid"]
