"""The baseline of ``bench.consent``: a bare Litestar app doing one raw asyncpg statement per request.

It answers what a write or a read of a consent-sized row costs when nothing but the server, Litestar,
msgspec and one asyncpg statement stand between the client and PostgreSQL: no service token, no
SQLAlchemy session, no hash chain, no projection. ``bench.consent`` serves it exactly as tillit serves
its components (granian, one worker, ASGI, factory; see ``tillit.cli._serve``) in its own process::

    BENCH_RAW_DSN=postgresql://postgres@127.0.0.1:5432/test BENCH_RAW_SCHEMA=raw BENCH_PORT=8199 \\
        .venv/bin/python -m bench._raw_insert_app

Its tables (:func:`schema_ddl`) mirror ``consent_event`` and ``consent_state`` of the consent service's
migration column for column, with the same indexes, so that an insert maintains as many B-trees and a
row takes as many bytes. The pool holds as many connections at most as the consent service's
SQLAlchemy pool (10 + 10 overflow).
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_TABLE",
    "POOL_MAX",
    "STATE_COLUMNS",
    "STATE_TABLE",
    "create_app",
    "main",
    "schema_ddl",
]

EVENT_TABLE: Final = "raw_event"
STATE_TABLE: Final = "raw_state"
EVENT_COLUMNS: Final = (
    "id",
    "chain_id",
    "seq",
    "subject_id",
    "purpose",
    "action",
    "notice_version",
    "source",
    "collected_at",
    "recorded_at",
    "evidence",
    "personal_salt",
    "personal_digest",
    "prev_hash",
    "hash",
)
STATE_COLUMNS: Final = ("subject_id", "purpose", "status", "since", "event_id", "notice_version", "expires_at")
POOL_MIN: Final = 10
POOL_MAX: Final = 20
"""The consent service's engine: ``pool_size=10, max_overflow=10`` (``tillit.db.Database``)."""

_ACTIONS: Final = {"give": "given", "refuse": "refused", "withdraw": "withdrawn"}
_INSERT: Final = (
    f"INSERT INTO {EVENT_TABLE} ({', '.join(EVENT_COLUMNS)}) "  # noqa: S608 - built from constants
    f"VALUES ({', '.join(f'${number}' for number in range(1, len(EVENT_COLUMNS) + 1))})"
)
_SELECT_STATE: Final = (
    f"SELECT {', '.join(STATE_COLUMNS)} FROM {STATE_TABLE} "  # noqa: S608 - built from constants
    "WHERE subject_id = $1 ORDER BY subject_id, purpose"
)


def schema_ddl(schema: str) -> list[str]:
    """Statements creating ``schema`` and the two tables (as ``consent_event`` and ``consent_state``)."""
    return [
        f'CREATE SCHEMA IF NOT EXISTS "{schema}"',
        f"""CREATE TABLE "{schema}".{EVENT_TABLE} (
            id VARCHAR(36) PRIMARY KEY,
            chain_id VARCHAR(36) NOT NULL,
            seq INTEGER NOT NULL,
            subject_id VARCHAR(64),
            purpose VARCHAR(100) NOT NULL,
            action VARCHAR(20) NOT NULL,
            notice_version INTEGER,
            source VARCHAR(80) NOT NULL,
            collected_at TIMESTAMP WITH TIME ZONE NOT NULL,
            recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
            evidence JSON,
            personal_salt VARCHAR(32),
            personal_digest VARCHAR(64) NOT NULL,
            prev_hash VARCHAR(64) NOT NULL,
            hash VARCHAR(64) NOT NULL,
            CONSTRAINT uq_raw_event_chain_seq UNIQUE (chain_id, seq)
        )""",
        f'CREATE INDEX ix_raw_event_subject_id ON "{schema}".{EVENT_TABLE} (subject_id)',
        f"""CREATE TABLE "{schema}".{STATE_TABLE} (
            subject_id VARCHAR(64) NOT NULL,
            purpose VARCHAR(100) NOT NULL,
            status VARCHAR(20) NOT NULL,
            since TIMESTAMP WITH TIME ZONE NOT NULL,
            event_id VARCHAR(36) NOT NULL,
            notice_version INTEGER,
            expires_at TIMESTAMP WITH TIME ZONE,
            PRIMARY KEY (subject_id, purpose)
        )""",
    ]


class Evidence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    ip: str | None = None
    user_agent: str | None = None
    page: str | None = None


class RawEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The consent service's request body, without its validation patterns."""

    purpose: str
    action: str
    source: str
    evidence: Evidence = msgspec.field(default_factory=Evidence)
    notice_version: int | None = None


class Inserted(msgspec.Struct):
    id: str
    subject_id: str
    action: str
    recorded_at: datetime


class StateRow(msgspec.Struct):
    purpose: str
    status: str
    since: datetime
    event_id: str
    notice_version: int | None
    expires_at: datetime | None


class SubjectState(msgspec.Struct):
    subject_id: str
    consents: list[StateRow]


_decode_event = msgspec.json.Decoder(RawEvent).decode
_encode = msgspec.json.Encoder().encode


@post("/raw/subjects/{subject_id:str}/events", status_code=HTTP_201_CREATED)
async def insert_event(subject_id: str, request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    """One INSERT of a consent-event-sized row, auto-committed: the least a durable write can cost."""
    try:
        event = _decode_event(await request.body())
    except msgspec.DecodeError as exc:
        return Response(_encode({"detail": str(exc)}), status_code=400, media_type="application/json")
    action = _ACTIONS.get(event.action)
    if action is None:
        return Response(_encode({"detail": "unknown action"}), status_code=422, media_type="application/json")
    now = datetime.now(UTC)
    event_id = str(uuid.uuid4())
    pool: asyncpg.Pool = state.pool
    await pool.execute(
        _INSERT,
        event_id,
        str(uuid.uuid4()),
        1,
        subject_id,
        event.purpose,
        action,
        event.notice_version,
        event.source,
        now,
        now,
        _encode(event.evidence).decode(),
        secrets.token_hex(16),
        secrets.token_hex(32),
        secrets.token_hex(32),
        secrets.token_hex(32),
    )
    body = Inserted(id=event_id, subject_id=subject_id, action=action, recorded_at=now)
    return Response(_encode(body), status_code=HTTP_201_CREATED, media_type="application/json")


@get("/raw/subjects/{subject_id:str}/consents")
async def read_state(subject_id: str, state: State) -> Response[bytes]:
    """One SELECT by primary key (its leading column) of a ``consent_state``-shaped table."""
    pool: asyncpg.Pool = state.pool
    rows = await pool.fetch(_SELECT_STATE, subject_id)
    consents = [
        StateRow(
            purpose=row["purpose"],
            status=row["status"],
            since=row["since"],
            event_id=row["event_id"],
            notice_version=row["notice_version"],
            expires_at=row["expires_at"],
        )
        for row in rows
    ]
    return Response(_encode(SubjectState(subject_id=subject_id, consents=consents)), media_type="application/json")


@get("/health")
async def health(state: State) -> dict[str, str]:
    pool: asyncpg.Pool = state.pool
    await pool.fetchval("SELECT 1")
    return {"status": "ok"}


def create_app() -> Litestar:
    """The app, configured from ``BENCH_RAW_DSN`` and ``BENCH_RAW_SCHEMA`` (a factory, as granian wants)."""
    dsn = os.environ["BENCH_RAW_DSN"]
    schema = os.environ["BENCH_RAW_SCHEMA"]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            dsn, min_size=POOL_MIN, max_size=POOL_MAX, server_settings={"search_path": schema}
        )
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    return Litestar(route_handlers=[insert_event, read_state, health], lifespan=[lifespan], openapi_config=None)


def main() -> None:
    """Serve :func:`create_app` the way ``tillit.cli._serve`` serves a component."""
    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        "bench._raw_insert_app:create_app",
        address=os.environ.get("BENCH_RAW_HOST", "127.0.0.1"),
        port=int(os.environ["BENCH_PORT"]),
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
