"""The change feed: every consent that became withdrawn, refused or expired, once, in a safe order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.consent.changes.repository import ChangeRepository
from services.consent.changes.schemas import ChangePage
from services.consent.changes.service import ChangeFeed
from services.consent.expiry import sweep_once
from services.consent.repository import ConsentRepository
from services.consent.schemas import RecordConsent
from services.consent.service import ConsentService
from services.consent.tests.support import KEYS, POLICY, PROFILED, SMS, record
from tillit.db import Database
from tillit.testing import POSTGRES_URL

pytestmark = pytest.mark.anyio


async def read(database: Database, after: int = 0, limit: int = 100) -> ChangePage:
    async with database.sessionmaker() as session, session.begin():
        return await ChangeFeed(ChangeRepository(session)).read(after, limit)


def summary(page: ChangePage) -> list[tuple[int, str, str | None, str]]:
    return [(change.seq, change.subject_id, change.purpose, change.action) for change in page.changes]


async def test_withdrawals_refusals_and_expiries_enter_the_feed(database: Database) -> None:
    await record(database, "astrid")
    given = await record(database, "astrid", action="withdraw")
    await record(database, "lars", SMS, action="refuse")
    await record(database, "kadri", collected_at=datetime.now(UTC) - timedelta(days=400))
    assert await sweep_once(database, POLICY, KEYS) == 1

    page = await read(database)

    assert summary(page) == [
        (1, "astrid", PROFILED, "withdrawn"),
        (2, "lars", SMS, "refused"),
        (3, "kadri", PROFILED, "expired"),
    ]
    assert page.changes[0].event_id == given.event.id
    assert page.changes[0].occurred_at == given.event.collected_at
    assert page.last_seq == 3


async def test_only_a_real_change_of_state_is_notified(database: Database) -> None:
    await record(database, "astrid")
    await record(database, "astrid", action="withdraw")
    await record(database, "astrid", action="withdraw", source="unsubscribe")
    # Backdated: enters the ledger, overturns nothing, notifies nobody.
    await record(database, "lars", action="give")
    await record(database, "lars", action="refuse", collected_at=datetime.now(UTC) - timedelta(days=30))

    assert summary(await read(database)) == [(1, "astrid", PROFILED, "withdrawn")]


async def test_positions_continue_after_the_last_one_read(database: Database) -> None:
    for subject in ("a", "b", "c"):
        await record(database, subject, action="refuse")
    first = await read(database, limit=2)
    assert [change.seq for change in first.changes] == [1, 2]
    await record(database, "d", action="refuse")
    rest = await read(database, after=first.last_seq)
    assert summary(rest) == [(3, "c", PROFILED, "refused"), (4, "d", PROFILED, "refused")]
    assert (await read(database, after=4)).changes == []
    assert (await read(database, after=4)).last_seq == 4


async def test_an_erasure_is_a_change_for_every_purpose(database: Database) -> None:
    moment = datetime(2026, 5, 1, 12, tzinfo=UTC)
    async with database.sessionmaker() as session, session.begin():
        await ChangeRepository(session).record_erasure("astrid", moment)
    page = await read(database)
    assert summary(page) == [(1, "astrid", None, "erased")]
    assert page.changes[0].occurred_at == moment


@asynccontextmanager
async def open_transaction(database: Database) -> AsyncIterator[ConsentService]:
    async with database.sessionmaker() as session, session.begin():
        yield ConsentService(ConsentRepository(session), POLICY, KEYS)


async def test_a_change_committed_late_is_not_skipped(database: Database) -> None:
    """A transaction that wrote first but commits last still gets a position after what was read."""
    if database.is_sqlite:
        pytest.skip("SQLite has one writer at a time: commit order is write order")
    withdraw = RecordConsent(purpose=PROFILED, action="withdraw", source="preference_page")
    async with open_transaction(database) as slow:
        await slow.record("slow", withdraw)
        await record(database, "fast", action="withdraw")
        seen = await read(database)
        assert summary(seen) == [(1, "fast", PROFILED, "withdrawn")]
    assert summary(await read(database, after=seen.last_seq)) == [(2, "slow", PROFILED, "withdrawn")]


async def test_a_write_by_schema_qualified_name_feeds_the_change_table(database: Database) -> None:
    """A bulk load or a DBA's session need not set the service's search path for the trigger to work."""
    if database.is_sqlite:
        pytest.skip("SQLite has no schemas or search path")
    connection = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(
            f'INSERT INTO "{database.schema}".consent_state (subject_id, purpose, status, since, event_id) '  # noqa: S608
            "VALUES ($1, $2, 'withdrawn', $3, $4)",
            "imported",
            PROFILED,
            datetime(2026, 5, 1, 12, tzinfo=UTC),
            "00000000-0000-4000-8000-000000000001",
        )
    finally:
        await connection.close()

    assert summary(await read(database)) == [(1, "imported", PROFILED, "withdrawn")]
