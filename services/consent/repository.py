"""Every query of the consent service.

The write path uses SQLAlchemy Core statements rather than the ORM unit of work: it is the hot path
and every statement on it is known in advance.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final

import msgspec
from sqlalchemy import bindparam, func, insert, or_, text, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.chain import GENESIS_HASH, ChainedEvent, ChainHead, canonical_json
from services.consent.models import ConsentChain, ConsentEvent, ConsentState, IdempotencyRecord, PublishedNotice
from tillit.db import Database, autocommit_connection, bare_fetch, driver_connection, release_autocommit
from tillit.types import as_utc

__all__ = ["ActiveRow", "ConsentRepository", "StateRow", "purpose_state_rows", "states_of_subjects"]

_chain = ConsentChain.__table__  # type: ignore[attr-defined]
_event = ConsentEvent.__table__  # type: ignore[attr-defined]
_state = ConsentState.__table__  # type: ignore[attr-defined]
_idempotency = IdempotencyRecord.__table__  # type: ignore[attr-defined]


@cache
def _write_statements(dialect_name: str) -> dict[str, Any]:
    """The write path's statements, built once per dialect and executed with parameters.

    Building a statement per request (``insert(...).values(**row)``) cost more CPU than the
    database did; a prebuilt statement hits SQLAlchemy's compiled cache directly.
    """
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    chain = dialect.insert(_chain)
    state = dialect.insert(_state)
    return {
        # DO UPDATE (not DO NOTHING) so that the row is locked and returned in one round trip.
        "lock_chain": chain.on_conflict_do_update(
            index_elements=["subject_id"], set_={"subject_id": chain.excluded.subject_id}
        ).returning(_chain.c.chain_id, _chain.c.subject_id, _chain.c.length, _chain.c.head_hash),
        "insert_event": insert(_event),
        "move_head": update(_chain)
        .where(_chain.c.chain_id == bindparam("head_chain_id"))
        .values(length=bindparam("head_length"), head_hash=bindparam("head_hash"), updated_at=bindparam("head_at")),
        "put_state": state.on_conflict_do_update(
            index_elements=["subject_id", "purpose"],
            set_={
                name: state.excluded[name] for name in ("status", "since", "event_id", "notice_version", "expires_at")
            },
            where=_state.c.since <= state.excluded.since,
        ),
    }


_EVENT_COLUMNS: Final = (
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
# One round trip: the event, the chain head and the derived state ($16 status, $17 expires_at).
_PG_APPEND: Final = f"""
WITH event AS (
    INSERT INTO consent_event ({", ".join(_EVENT_COLUMNS)})
    VALUES ({", ".join(f"${n}" for n in range(1, 16))})
), head AS (
    UPDATE consent_chain SET length = $3, head_hash = $15, updated_at = $10 WHERE chain_id = $2
)
INSERT INTO consent_state (subject_id, purpose, status, since, event_id, notice_version, expires_at)
VALUES ($4, $5, $16, $9, $1, $7, $17)
ON CONFLICT (subject_id, purpose) DO UPDATE SET
    status = EXCLUDED.status, since = EXCLUDED.since, event_id = EXCLUDED.event_id,
    notice_version = EXCLUDED.notice_version, expires_at = EXCLUDED.expires_at
WHERE consent_state.since <= EXCLUDED.since
"""  # noqa: S608 - built from the constant column list above
# The same append as one autocommitted statement, guarded by the chain head read before it (compare
# and set): it writes only if the head still has length $3 - 1 and hash $14 and still belongs to
# the subject (as the locked path's upsert by subject_id would find it), and answers how many
# heads it moved (0: another writer of this subject came first; read the head again). Parameters in
# a SELECT list get no type from the target column, hence the casts.
_EVENT_CASTS: Final = (
    "text", "text", "int", "text", "text", "text", "int", "text",
    "timestamptz", "timestamptz", "json", "text", "text", "text", "text",
)  # fmt: skip
_PG_EVENT_AND_STATE: Final = f"""
event AS (
    INSERT INTO consent_event ({", ".join(_EVENT_COLUMNS)})
    SELECT {", ".join(f"${n}::{cast}" for n, cast in enumerate(_EVENT_CASTS, 1))} FROM head
), state AS (
    INSERT INTO consent_state (subject_id, purpose, status, since, event_id, notice_version, expires_at)
    SELECT $4, $5, $16::text, $9, $1, $7, $17::timestamptz FROM head
    ON CONFLICT (subject_id, purpose) DO UPDATE SET
        status = EXCLUDED.status, since = EXCLUDED.since, event_id = EXCLUDED.event_id,
        notice_version = EXCLUDED.notice_version, expires_at = EXCLUDED.expires_at
    WHERE consent_state.since <= EXCLUDED.since
)
SELECT count(*) FROM head
"""  # noqa: S608 - built from the constant column lists above
_PG_APPEND_IF_HEAD: Final = f"""
WITH head AS (
    UPDATE consent_chain SET length = $3, head_hash = $15, updated_at = $10
    WHERE chain_id = $2 AND length = $3 - 1 AND head_hash = $14 AND subject_id = $4::text
    RETURNING chain_id
), {_PG_EVENT_AND_STATE}"""  # noqa: S608 - constants
# A subject's first event: the chain is created with it, unless another writer created the subject's
# chain meanwhile (then nothing is written, as when the head moved).
_PG_CREATE_WITH_FIRST: Final = f"""
WITH head AS (
    INSERT INTO consent_chain (chain_id, subject_id, length, head_hash, updated_at)
    SELECT $2::text, $4::text, $3, $15::text, $10::timestamptz WHERE $3 = 1 AND $14 = '{GENESIS_HASH}'
    ON CONFLICT (subject_id) DO NOTHING
    RETURNING chain_id
), {_PG_EVENT_AND_STATE}"""
_PG_HEAD: Final = "SELECT chain_id, subject_id, length, head_hash FROM consent_chain WHERE subject_id = $1"
_PG_LEDGER: Final = f"SELECT {', '.join(ChainedEvent.__struct_fields__)} FROM consent_event ORDER BY chain_id, seq"  # noqa: S608
# The ledger as COPY text for services.consent.chain_text: ChainedEvent's columns in its order, the
# notice version as its JSON token and both timestamps as chain._timestamp writes them (UTC,
# microseconds; NULL outside years 1-9999, which Python could not have recorded).
_PG_TIMESTAMP: Final = (
    "CASE WHEN {0} >= '0001-01-01T00:00:00Z' AND {0} < '10000-01-01T00:00:00Z' "
    """THEN to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') END"""
)
_PG_LEDGER_TEXT: Final = f"""
SELECT id, chain_id, seq, subject_id, purpose, action, coalesce(notice_version::text, 'null'), source,
    {_PG_TIMESTAMP.format("collected_at")}, {_PG_TIMESTAMP.format("recorded_at")},
    evidence, personal_salt, personal_digest, prev_hash, hash
FROM consent_event ORDER BY chain_id, seq
"""  # noqa: S608 - constants
_PG_HEADS: Final = "SELECT chain_id, subject_id, length, head_hash FROM consent_chain"
_PG_STATES: Final = """
SELECT subject_id, purpose, status, since, event_id, notice_version, expires_at
FROM consent_state WHERE subject_id = $1 ORDER BY purpose
"""

_PG_STATES_OF: Final = """
SELECT subject_id, purpose, status, since, event_id, notice_version, expires_at
FROM consent_state WHERE subject_id = ANY($1::text[]) ORDER BY subject_id, purpose
"""

# The audience query: given consents of one purpose that still count, in subject order after $2.
# The index ix_consent_state_audience (purpose, status, subject_id) serves it.
_PG_ACTIVE: Final = """
SELECT subject_id, event_id, notice_version, expires_at
FROM consent_state
WHERE purpose = $1 AND status = 'given' AND subject_id > $2
  AND (expires_at IS NULL OR expires_at > $3) AND coalesce(notice_version, 1) >= $4
ORDER BY subject_id
LIMIT $5
"""
_PG_PURPOSE_STATES: Final = """
SELECT subject_id, purpose, status, since, event_id, notice_version, expires_at
FROM consent_state WHERE purpose = $1 AND subject_id = ANY($2::text[]) ORDER BY subject_id
"""


def _json(value: Any) -> str | None:
    """Evidence as stored: in the form its digest hashes (keys sorted), so the verifier hashes it as is."""
    return None if value is None else canonical_json(value).decode()


class StateRow(msgspec.Struct, frozen=True):
    """One purpose's current state as read (lighter than the ORM model on the read path)."""

    subject_id: str
    purpose: str
    status: str
    since: datetime
    event_id: str
    notice_version: int | None
    expires_at: datetime | None


async def states_of_subjects(driver: Any, subject_ids: Sequence[str]) -> dict[str, list[StateRow]]:
    """The states of many subjects, each ordered by purpose, on an asyncpg connection (PostgreSQL only).

    A subject with no state is left out. For :class:`services.consent.service.BatchedStateReads`.
    """
    states: dict[str, list[StateRow]] = {}
    for row in await driver.fetch(_PG_STATES_OF, subject_ids):
        states.setdefault(row[0], []).append(StateRow(*row))
    return states


async def purpose_state_rows(database: Database, purpose: str, subject_ids: list[str]) -> list[Any]:
    """:meth:`ConsentRepository.states_of` as asyncpg records in :class:`StateRow`'s column order, on a bare
    connection without a session (PostgreSQL only): the gateway's batched reads take this path."""
    return await bare_fetch(database, _PG_PURPOSE_STATES, purpose, subject_ids)


class ActiveRow(msgspec.Struct, frozen=True):
    """One subject whose consent to a purpose counts now (the audience query's row)."""

    subject_id: str
    event_id: str
    notice_version: int | None
    expires_at: datetime | None


class ConsentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _dialect(self) -> Any:
        return postgresql if self.session.bind.dialect.name == "postgresql" else sqlite

    def _statement(self, name: str) -> Any:
        return _write_statements(self.session.bind.dialect.name)[name]

    async def _asyncpg(self) -> Any | None:
        """The asyncpg connection under this session's transaction, on PostgreSQL; None on SQLite.

        The append and the state read run their fixed statements on it directly: SQLAlchemy's
        per-statement work cost several times what PostgreSQL did (see bench.consent). Same
        connection; a write only once SQLAlchemy has begun the transaction on it.
        """
        return await driver_connection(self.session)

    async def lock_chain(self, subject_id: str, now: datetime) -> ChainHead:
        """The subject's chain head, created if missing, locked until the transaction ends.

        One statement that writes: on SQLite the transaction takes the write lock at once instead of
        failing to upgrade a read lock; on PostgreSQL the row lock serializes writers of this subject
        only.
        """
        result = await self.session.exec(  # type: ignore[call-overload]
            self._statement("lock_chain"),
            params={
                "chain_id": str(uuid.uuid4()),
                "subject_id": subject_id,
                "length": 0,
                "head_hash": GENESIS_HASH,
                "updated_at": now,
            },
        )
        row = result.one()
        return ChainHead(chain_id=row.chain_id, subject_id=row.subject_id, length=row.length, head_hash=row.head_hash)

    async def autocommit_driver(self) -> Any | None:
        """The asyncpg connection for a write that is the request's only one, or None.

        On PostgreSQL, while this session has sent nothing yet (no BEGIN), a single statement on its
        connection commits on its own before it answers: durable, and without the BEGIN and COMMIT
        round trips. None on SQLite (writes take turns there) and once a transaction is under way.
        """
        return await autocommit_connection(self.session)

    async def release_autocommit_driver(self) -> None:
        """Give the lone write's connection back before this session uses its own."""
        await release_autocommit(self.session)

    async def read_chain(self, driver: Any, subject_id: str) -> ChainHead | None:
        """The subject's chain head as committed now, None if the subject has none yet; no lock is taken."""
        row = await driver.fetchrow(_PG_HEAD, subject_id)
        return None if row is None else ChainHead(*row)

    async def append_if_head(
        self, driver: Any, event: dict[str, Any], state: dict[str, Any], *, first: bool = False
    ) -> bool:
        """:meth:`append` as one autocommitted statement, if the chain head is still the one read.

        False (nothing written) when another writer of the same subject moved the head meanwhile.
        Under READ COMMITTED the head's UPDATE waits for such a writer and then re-checks its
        condition against the committed row, so two writers never both chain onto one event.
        ``first``: the subject had no chain; it is created with this event, unless another writer
        created one meanwhile (False: the unique subject makes the second creation do nothing).
        """
        moved = await driver.fetchval(
            _PG_CREATE_WITH_FIRST if first else _PG_APPEND_IF_HEAD,
            *(event[name] if name != "evidence" else _json(event[name]) for name in _EVENT_COLUMNS),
            state["status"],
            state["expires_at"],
        )
        return bool(moved)

    async def append(self, event: dict[str, Any], state: dict[str, Any]) -> None:
        """Add one event, move its chain's head to it and derive the purpose's state from it.

        The state only moves forward in ``since``: an event collected earlier than the one the state
        rests on (an import of old consents, a checkout box recorded late) enters the ledger but does
        not overturn the newer decision.
        """
        driver = await self._asyncpg()
        # Only inside the transaction SQLAlchemy began (lock_chain ran through it): a statement sent
        # on the driver before that would commit on its own.
        if driver is not None and driver.is_in_transaction():
            await driver.execute(
                _PG_APPEND,
                *(event[name] if name != "evidence" else _json(event[name]) for name in _EVENT_COLUMNS),
                state["status"],
                state["expires_at"],
            )
            return
        await self.session.exec(self._statement("insert_event"), params=event)  # type: ignore[call-overload]
        await self.session.exec(  # type: ignore[call-overload]
            self._statement("move_head"),
            params={
                "head_chain_id": event["chain_id"],
                "head_length": event["seq"],
                "head_hash": event["hash"],
                "head_at": event["recorded_at"],
            },
        )
        await self.session.exec(self._statement("put_state"), params=state)  # type: ignore[call-overload]

    async def state(self, subject_id: str, purpose: str) -> ConsentState | None:
        return await self.session.get(ConsentState, (subject_id, purpose), populate_existing=True)

    async def states_for(self, subject_id: str) -> list[StateRow]:
        driver = await self._asyncpg()
        if driver is not None:
            return [StateRow(*row) for row in await driver.fetch(_PG_STATES, subject_id)]
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(*(_state.c[name] for name in StateRow.__struct_fields__))
            .where(_state.c.subject_id == subject_id)
            .order_by(_state.c.purpose)
        )
        return [StateRow(*row) for row in result]

    async def active_for_purpose(
        self, purpose: str, after: str, limit: int, now: datetime, min_notice_version: int
    ) -> list[ActiveRow]:
        """Subjects after ``after`` (in subject order) whose given consent to ``purpose`` counts at ``now``.

        Counts: given, not expired, under a notice version at or above ``min_notice_version``. Keyset
        pagination: the caller passes the last subject of one page as ``after`` of the next.
        """
        driver = await self._asyncpg()
        if driver is not None:
            rows = await driver.fetch(_PG_ACTIVE, purpose, after, now, min_notice_version, limit)
            return [ActiveRow(*row) for row in rows]
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_state.c.subject_id, _state.c.event_id, _state.c.notice_version, _state.c.expires_at)
            .where(
                _state.c.purpose == purpose,
                _state.c.status == "given",
                _state.c.subject_id > after,
                (_state.c.expires_at.is_(None)) | (_state.c.expires_at > now),
                func.coalesce(_state.c.notice_version, 1) >= min_notice_version,
            )
            .order_by(_state.c.subject_id)
            .limit(limit)
        )
        return [ActiveRow(row[0], row[1], row[2], as_utc(row[3]) if row[3] else None) for row in result]

    async def states_of(self, purpose: str, subject_ids: Sequence[str]) -> Sequence[Sequence[Any]]:
        """The current state of ``purpose`` for each of these subjects that has one, in subject order.

        Rows in :class:`StateRow`'s column order, unwrapped: :func:`services.consent.service.purpose_states_at`
        reads them once, so building a ``StateRow`` per row would be work for nothing.
        """
        driver = await self._asyncpg()
        if driver is not None:
            return await driver.fetch(_PG_PURPOSE_STATES, purpose, list(subject_ids))  # type: ignore[no-any-return]
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(*(_state.c[name] for name in StateRow.__struct_fields__))
            .where(_state.c.purpose == purpose, _state.c.subject_id.in_(subject_ids))
            .order_by(_state.c.subject_id)
        )
        return result.all()  # type: ignore[no-any-return]

    async def events_for(self, subject_id: str) -> Sequence[ConsentEvent]:
        result = await self.session.exec(
            select(ConsentEvent).where(ConsentEvent.subject_id == subject_id).order_by(ConsentEvent.seq)  # type: ignore[arg-type]
        )
        return result.all()

    async def claim_idempotency_key(self, key: str, fingerprint: str, now: datetime) -> IdempotencyRecord | None:
        """Claim ``key`` for this transaction; the earlier record if another request holds it.

        On PostgreSQL a concurrent claim of the same key waits here until the first transaction
        ends, then sees its answer; if that one rolled back, the claim goes through.
        """
        claimed = await self.session.exec(  # type: ignore[call-overload]
            self._dialect.insert(IdempotencyRecord)
            .values(key=key, fingerprint=fingerprint, response=None, created_at=now)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(_idempotency.c.key)
        )
        if claimed.first() is not None:
            return None
        return await self.session.get(IdempotencyRecord, key, populate_existing=True)

    async def complete_idempotency_key(self, key: str, response: bytes) -> None:
        await self.session.exec(  # type: ignore[call-overload]
            update(_idempotency).where(_idempotency.c.key == key).values(response=response)
        )

    async def imported(self, subject_ids: Sequence[str]) -> set[tuple[str, str, str, datetime]]:
        """(subject, purpose, action, collected_at) of every imported event of these subjects."""
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_event.c.subject_id, _event.c.purpose, _event.c.action, _event.c.collected_at).where(
                _event.c.subject_id.in_(subject_ids), _event.c.source == "import"
            )
        )
        return {(row.subject_id, row.purpose, row.action, as_utc(row.collected_at)) for row in result}

    async def lapsed(self, now: datetime, limit: int) -> Sequence[tuple[str, str]]:
        """(subject, purpose) pairs whose given consent has passed its expiry and has no event saying so."""
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_state.c.subject_id, _state.c.purpose)
            .where(_state.c.status == "given", _state.c.expires_at <= now)
            .order_by(_state.c.expires_at)
            .limit(limit)
        )
        return [(row.subject_id, row.purpose) for row in result]

    async def given_counts(self, now: datetime) -> dict[tuple[str, int], int]:
        """Subjects with an unexpired given consent, per (purpose, notice version; 1 when none was shown)."""
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_state.c.purpose, _state.c.notice_version, func.count())
            .where(_state.c.status == "given", or_(_state.c.expires_at.is_(None), _state.c.expires_at > now))
            .group_by(_state.c.purpose, _state.c.notice_version)
        )
        counts: dict[tuple[str, int], int] = {}
        for purpose, version, count in result:
            counts[(purpose, version or 1)] = counts.get((purpose, version or 1), 0) + count
        return counts

    async def event(self, subject_id: str, event_id: str) -> ConsentEvent | None:
        result = await self.session.exec(
            select(ConsentEvent).where(ConsentEvent.subject_id == subject_id, ConsentEvent.id == event_id)  # type: ignore[arg-type]
        )
        return result.first()

    async def published_notices(self) -> dict[tuple[str, int], str]:
        result = await self.session.exec(select(PublishedNotice))
        return {(notice.purpose, notice.version): notice.digest for notice in result.all()}

    async def publish_notice(self, purpose: str, version: int, digest: str, now: datetime) -> None:
        await self.session.exec(  # type: ignore[call-overload]
            self._dialect.insert(PublishedNotice)
            .values(purpose=purpose, version=version, digest=digest, first_seen_at=now)
            .on_conflict_do_nothing(index_elements=["purpose", "version"])
        )

    async def snapshot(self) -> None:
        """Read everything that follows from one snapshot (PostgreSQL REPEATABLE READ).

        Verification reads the chain heads first and the events after; without one snapshot, an
        event appended in between would look like an insertion. Python's sqlite3 opens no
        transaction for reads, so on SQLite an explicit BEGIN makes the reads one WAL snapshot.
        Must come before the transaction's first statement.
        """
        if self.session.bind.dialect.name == "postgresql":
            await self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            # Begins the transaction (and takes its snapshot), so the reads after it may go to the
            # driver directly. No parallel workers: a parallel sort of the ledger cost PostgreSQL
            # twice the CPU of one backend's plan, on cores the verifier itself needs.
            await self.session.exec(text("SET LOCAL max_parallel_workers_per_gather = 0"))  # type: ignore[call-overload]
        else:
            await self.session.exec(text("BEGIN"))  # type: ignore[call-overload]

    async def chain_heads(self) -> dict[str, ChainHead]:
        driver = await self._asyncpg()
        if driver is not None and driver.is_in_transaction():
            return {row[0]: ChainHead(*row) for row in await driver.fetch(_PG_HEADS)}
        rows = await self.session.exec(  # type: ignore[call-overload]
            core_select(_chain.c.chain_id, _chain.c.subject_id, _chain.c.length, _chain.c.head_hash)
        )
        return {row.chain_id: ChainHead(row.chain_id, row.subject_id, row.length, row.head_hash) for row in rows}

    async def copy_ledger(self, sink: Callable[[bytes], Awaitable[object]]) -> bool:
        """Every event, ordered by chain and position, as COPY text lines handed to ``sink`` in chunks.

        PostgreSQL only, inside the snapshot transaction (False elsewhere: use :meth:`stream_ledger`).
        COPY streams without a cursor's per-fetch round trips or per-row records; the line format is
        the one :class:`services.consent.chain_text.TextLedgerVerifier` reads.
        """
        driver = await self._asyncpg()
        if driver is None or not driver.is_in_transaction():
            return False
        await driver.copy_from_query(_PG_LEDGER_TEXT, output=sink)
        return True

    async def stream_ledger(self, batch: int = 5_000) -> AsyncIterator[ChainedEvent]:
        """Every event ordered by chain and position, read in batches (constant memory).

        On PostgreSQL a server-side asyncpg cursor inside the snapshot transaction; SQLAlchemy's
        row handling cost more than hashing the event did.
        """
        driver = await self._asyncpg()
        if driver is not None and driver.is_in_transaction():
            async for record in driver.cursor(_PG_LEDGER, prefetch=batch):
                yield ChainedEvent(*record)
            return
        columns = [_event.c[name] for name in ChainedEvent.__struct_fields__]
        result = await self.session.stream(
            core_select(*columns).order_by(_event.c.chain_id, _event.c.seq).execution_options(yield_per=batch)
        )
        async for partition in result.partitions(batch):
            for row in partition:
                yield ChainedEvent(*row)
