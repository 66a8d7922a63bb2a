"""The async database engine and the request-owned transaction.

A process owns exactly one database: an SQLite file by default, or a PostgreSQL schema when a URL
is configured. Handlers receive an :class:`AsyncSession` whose transaction commits when the handler
returns and rolls back when it raises, so an acknowledged write is committed and a failed one
leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any, Final

import msgspec
from litestar import Request
from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import greenlet_spawn
from sqlmodel.ext.asyncio.session import AsyncSession

from tillit.problems import Unavailable

__all__ = [
    "POOL_SIZE",
    "Database",
    "autocommit_connection",
    "bare_connection",
    "bare_fetch",
    "database_read_session",
    "driver_connection",
    "provide_read_session",
    "provide_session",
    "read_session",
    "release_autocommit",
    "request_session",
]

POOL_SIZE: Final = 16
"""Connections per process; four processes use PostgreSQL, well inside its default 100."""
BARE_IDLE: Final = 4
"""Of those, kept checked out and idle for bare use at most (see :class:`_BareConnections`)."""
_RECYCLE_SECONDS: Final = 1800


class Database:
    """Engine and session factory for one component's database."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.is_sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(url, **self._engine_options())
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.write_turns: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        """SQLite has one writer at a time and its busy handler polls with growing sleeps, so under a
        burst some writers starve past any timeout. Requests that may write queue here instead, in
        arrival order; PostgreSQL needs no queue."""
        self.sessionmaker = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)
        self.read_engine: AsyncEngine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        """The same pool, for sessions that only read: no BEGIN and COMMIT round trips."""
        self.bare: _BareConnections | None = None
        """The lender of bare connections (PostgreSQL only; see :func:`bare_connection`)."""
        if not self.is_sqlite:
            self.bare = _bare_connections[self.engine.sync_engine] = _BareConnections(self.engine)

    def _engine_options(self) -> dict[str, Any]:
        json_options: dict[str, Any] = {
            "json_serializer": lambda value: msgspec.json.encode(value).decode(),
            "json_deserializer": msgspec.json.decode,
        }
        if self.is_sqlite:
            return {"connect_args": {"timeout": 15}, **json_options}
        # A fixed pool: connections are kept, never opened and closed per burst (each costs a
        # PostgreSQL backend), and callers beyond it wait. No pre-ping: it costs three round trips
        # per checkout on asyncpg; a connection the server dropped is recycled or fails one request
        # with a 503 (see tillit.problems) instead.
        options: dict[str, Any] = {
            "pool_size": POOL_SIZE,
            "max_overflow": 0,
            "pool_timeout": 10,
            "pool_recycle": _RECYCLE_SECONDS,
            **json_options,
        }
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
        bare = _bare_connections.get(self.engine.sync_engine)
        if bare is not None:
            await bare.close()
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


async def provide_read_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """A session for handlers that only read: autocommit, so no BEGIN/COMMIT round trips.

    On PostgreSQL the session is lazy: the fixed reads that run on asyncpg directly (see
    :func:`driver_connection`) take a bare connection from the engine's pool, without SQLAlchemy's
    ``Connection``, its execution options and the session's transaction around it — those cost a
    sixth of a consent state read's CPU (py-spy under ``bench.consent``). Anything read through the
    ORM or Core connects the session as before (autocommit too).

    Providers take the request, not ``state``: Litestar builds a new ``State`` from the application's
    for every parameter named ``state``, which cost a sixth of a state read's CPU (py-spy).
    """
    async with read_session(request) as session:
        yield session


def read_session(request: Request[Any, Any, Any]) -> AbstractAsyncContextManager[AsyncSession]:
    """:func:`provide_read_session` for a handler that opens it itself.

    The hottest reads (a profile, a subject's consent state) do: Litestar's dependency injection of a
    generator provider — resolving it, then its cleanup group on the way out — was a seventh of a
    profile read's CPU (py-spy, in process).
    """
    return database_read_session(request.app.state.database)


@asynccontextmanager
async def database_read_session(database: Database) -> AsyncIterator[AsyncSession]:
    """:func:`read_session` for code that holds the database, not a request (the batch reads' fast path)."""
    if database.is_sqlite:
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(bind=connection, expire_on_commit=False) as session:
                yield session
        return
    reader = _BareReader(database.engine)
    session = AsyncSession(bind=database.read_engine, expire_on_commit=False)
    session.info[_BARE_READER] = reader
    clean = False
    try:
        yield session
        clean = True
    except Exception as exc:
        if reader.dropped():
            raise _dropped() from exc
        raise
    finally:
        try:
            await _close_if_used(session)
        finally:
            await reader.release(clean=clean)


@asynccontextmanager
async def bare_connection(database: Database) -> AsyncIterator[Any]:
    """A pooled asyncpg connection outside any session (PostgreSQL only): each statement commits alone.

    For work that belongs to no request, such as a batch of reads shared by many requests
    (:mod:`tillit.read_batch`). A connection the server dropped is invalidated, not put back.
    """
    bare = _bare_connections_of(database.engine)
    pooled = await bare.take()
    try:
        yield pooled.driver_connection
    except BaseException as exc:
        dropped = pooled.driver_connection.is_closed()
        await _give_back(pooled)
        if dropped and isinstance(exc, Exception):
            raise _dropped() from exc
        raise
    await bare.give(pooled)


async def bare_fetch(database: Database, query: str, *args: Any) -> list[Any]:
    """The rows of one statement on a bare pooled connection: :func:`bare_connection` for a lone read.

    For the hottest batch reads: the context manager's generator, entered and left per read, cost
    ~6 µs of CPU, a fifth of the statement's own (~28 µs; in process on uvloop). The same rules: a
    connection the server dropped is a 503 and is not kept, one whose statement failed goes back to
    SQLAlchemy, and the connection is given back before the rows are used.
    """
    bare = database.bare or _bare_connections_of(database.engine)
    pooled = await bare.take()
    driver = pooled.driver_connection
    try:
        rows: list[Any] = await driver.fetch(query, *args)
    except BaseException as exc:
        dropped = driver.is_closed()
        await _give_back(pooled)
        if dropped and isinstance(exc, Exception):
            raise _dropped() from exc
        raise
    await bare.give(pooled)
    return rows


def _dropped() -> Unavailable:
    """What a statement on a connection the server dropped answers (asyncpg says only "closed")."""
    return Unavailable(
        "the database connection was lost; nothing was changed, try again",
        slug="database-unavailable",
        headers={"Retry-After": "1"},
    )


class _BareConnections:
    """Pooled connections lent for bare use (no session around them), a few kept between loans.

    Checking a connection out of SQLAlchemy's pool and back in cost ~23 µs of CPU (greenlet hops,
    pool events, the reset on return), as much as the ``SELECT 1`` round trip it served; a batch
    read or a read request takes one for a single statement. Up to :data:`BARE_IDLE` connections
    stay checked out and idle here instead, handed over without SQLAlchemy. They are still the
    pool's (counted against its size), are recycled after the pool's recycle time like the others,
    and one the server dropped, left inside a transaction or whose user failed goes back to
    SQLAlchemy (discarded if dropped or in a transaction).
    """

    __slots__ = ("_closed", "_engine", "_idle")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._idle: list[tuple[Any, float]] = []
        self._closed = False

    async def take(self) -> Any:
        while self._idle:
            pooled, since = self._idle.pop()
            if time.monotonic() - since < _RECYCLE_SECONDS and not pooled.driver_connection.is_closed():
                return pooled
            await _give_back(pooled)
        return await self._engine.raw_connection()

    async def give(self, pooled: Any) -> None:
        driver = pooled.driver_connection
        if self._closed or len(self._idle) >= BARE_IDLE or driver.is_closed() or driver.is_in_transaction():
            await _give_back(pooled)
            return
        self._idle.append((pooled, time.monotonic()))

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            await _give_back(self._idle.pop()[0])


async def _give_back(pooled: Any) -> None:
    """Return ``pooled`` to SQLAlchemy's pool; one whose server connection is gone is discarded.

    So is one left inside a transaction begun on the driver itself: SQLAlchemy's reset on return
    only rolls back the transactions it began, so the next user would inherit this one.
    """
    driver = pooled.driver_connection
    if driver.is_closed() or driver.is_in_transaction():
        await greenlet_spawn(pooled.invalidate)
    await greenlet_spawn(pooled.close)


_bare_connections: weakref.WeakKeyDictionary[Engine, _BareConnections] = weakref.WeakKeyDictionary()


def _bare_connections_of(engine: AsyncEngine) -> _BareConnections:
    """The engine's lender: the :class:`Database`'s, or a throwaway one that keeps nothing."""
    bare = _bare_connections.get(engine.sync_engine)
    if bare is None:
        bare = _BareConnections(engine)
        bare._closed = True
    return bare


async def _close_if_used(session: AsyncSession) -> None:
    """Close ``session`` unless it never began a transaction and holds no objects.

    Such a session has no connection and nothing to expunge, so closing it does nothing, yet costs a
    greenlet switch: ~30 µs, a sixteenth of a consent state read's CPU. Fixed reads and lone writes
    on PostgreSQL take that path (they use a bare pooled connection, never the session's).
    """
    if session.in_transaction() or session.identity_map or session.new or session.deleted:
        await session.close()


_BARE_READER: Final = "tillit.bare_reader"


class _BareReader:
    """One pooled asyncpg connection, taken on first use, for a read session's lifetime."""

    __slots__ = ("_bare", "_pooled")

    def __init__(self, engine: AsyncEngine) -> None:
        self._bare = _bare_connections_of(engine)
        self._pooled: Any = None

    async def driver(self) -> Any:
        if self._pooled is None:
            self._pooled = await self._bare.take()
        return self._pooled.driver_connection

    def dropped(self) -> bool:
        """Whether the connection it lent was closed under its user (by the server, say)."""
        return self._pooled is not None and self._pooled.driver_connection.is_closed()

    async def release(self, *, clean: bool = True) -> None:
        """Give the connection back; one whose user failed (a statement may be cut off) goes to SQLAlchemy."""
        if self._pooled is not None:
            pooled, self._pooled = self._pooled, None
            await (self._bare.give(pooled) if clean else _give_back(pooled))


async def driver_connection(session: AsyncSession) -> Any | None:
    """The asyncpg connection to run a fixed statement on directly, on PostgreSQL; None on SQLite.

    In a write session (or a read session already connected, e.g. in a snapshot) it is the session's
    own connection, under its transaction. In a fresh read session it is a bare pooled connection
    (autocommit): a read handler that also uses the ORM does so *before* its direct reads, or it
    holds two connections at once.
    """
    if session.bind.dialect.name != "postgresql":
        return None
    reader: _BareReader | None = session.info.get(_BARE_READER)
    if reader is not None and not session.in_transaction():
        return await reader.driver()
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def autocommit_connection(session: AsyncSession) -> Any | None:
    """An asyncpg connection on which a statement commits on its own, for a write session; or None.

    A statement sent on it commits before it answers (PostgreSQL's implicit transaction): a request
    whose writes fit in one statement is durable with it, without BEGIN and COMMIT round trips.

    - Session not connected yet: a bare pooled connection, like a read session's (no SQLAlchemy
      ``Connection`` and session transaction around it), held until :func:`release_autocommit` or
      the end of the request. Release it before using the session itself, or the request holds
      two of the pool's connections at once.
    - Session connected (e.g. it read through :func:`driver_connection` first) but SQLAlchemy has
      not begun a transaction on it yet: the session's own connection.
    - Otherwise, and on SQLite: None.
    """
    if session.bind.dialect.name != "postgresql" or session.info.get(_BARE_READER) is not None:
        return None
    if not session.in_transaction():
        lone: _BareReader | None = session.info.get(_LONE_WRITER)
        if lone is None:
            lone = session.info[_LONE_WRITER] = _BareReader(session.bind)
        return await lone.driver()
    driver = await driver_connection(session)
    return None if driver is None or driver.is_in_transaction() else driver


async def release_autocommit(session: AsyncSession, *, clean: bool = True) -> None:
    """Give back the bare connection :func:`autocommit_connection` took, if it took one."""
    lone: _BareReader | None = session.info.pop(_LONE_WRITER, None)
    if lone is not None:
        await lone.release(clean=clean)


_LONE_WRITER: Final = "tillit.lone_writer"


async def provide_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """One session per request; the request owns the transaction."""
    async with request_session(request) as session:
        yield session


@asynccontextmanager
async def request_session(request: Request[Any, Any, Any]) -> AsyncIterator[AsyncSession]:
    """:func:`provide_session` for a handler that opens it itself (the hottest write, as
    :func:`read_session` for the hottest reads): committed when the block ends, rolled back if it raises."""
    database: Database = request.app.state.database
    async with _write_turn(database, request.method):
        session = database.sessionmaker()
        clean = False
        try:
            yield session
        except BaseException:
            if session.in_transaction():
                await session.rollback()
            raise
        else:
            # A session nothing was added to, read or written with has no transaction: committing
            # would only begin and end an empty one (a greenlet hop; a GET release takes this path).
            if session.in_transaction():
                await session.commit()
            clean = True
        finally:
            try:
                await release_autocommit(session, clean=clean)
            finally:
                await _close_if_used(session)


_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def _write_turn(database: Database, method: str) -> AbstractAsyncContextManager[Any]:
    if database.write_turns is None or method in _READ_METHODS:
        return nullcontext()
    return database.write_turns
