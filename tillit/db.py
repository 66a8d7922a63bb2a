"""The async database engine and the request-owned transaction.

A process owns exactly one database: an SQLite file by default, or a PostgreSQL schema when a URL
is configured. Handlers receive an :class:`AsyncSession` whose transaction commits when the handler
returns and rolls back when it raises, so an acknowledged write is committed and a failed one
leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar.datastructures import State
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

__all__ = ["Database", "provide_session"]


class Database:
    """Engine and session factory for one component's database."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(url, **self._engine_options())
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    def _engine_options(self) -> dict[str, Any]:
        if self.is_sqlite:
            return {"connect_args": {"timeout": 15}}
        options: dict[str, Any] = {"pool_size": 10, "max_overflow": 10, "pool_pre_ping": True}
        if self.schema:
            options["connect_args"] = {"server_settings": {"search_path": self.schema}}
        return options

    async def ensure_schema(self) -> None:
        """Create the component's PostgreSQL schema if it is missing (no-op on SQLite)."""
        if self.is_sqlite or not self.schema:
            return
        async with self.engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


async def provide_session(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request; the request owns the transaction."""
    database: Database = state.database
    async with database.sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        else:
            await session.commit()
