"""The group-committed release audit, on a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from gateway.app import MIGRATIONS
from gateway.audit_writer import AuditWriter, ReleaseRow
from gateway.models import ReleaseRecord
from tillit.db import Database
from tillit.problems import Unavailable
from tillit.read_batch import Linger
from tillit.testing import BACKENDS, migrated_database
from tillit.types import as_utc

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


def release(subject_id: str, release_id: str | None = None) -> ReleaseRecord:
    return ReleaseRecord(
        release_id=release_id or str(uuid.uuid4()),
        client_id="web-1",
        channel="web",
        purpose="personalize.content.profiled",
        subject_id=subject_id,
        released=["clothing_size", "first_name"],
        withheld=[{"field": "email", "reason": "category_not_permitted"}],
        consent_event_id=str(uuid.uuid4()),
        released_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
    )


async def stored(database: Database) -> dict[str, tuple[str, list[str], list[dict[str, str]]]]:
    async with database.sessionmaker() as session:
        rows = (await session.exec(text("SELECT release_id FROM release_record"))).all()  # type: ignore[call-overload]
        found = {}
        for (release_id,) in rows:
            record = await session.get(ReleaseRecord, release_id)
            assert record is not None
            found[release_id] = (record.subject_id, record.released, record.withheld)
        return found


async def test_every_concurrent_record_is_committed_when_its_call_returns(database: Database) -> None:
    writer = AuditWriter(database, max_rows=7)
    records = [release(f"shopper-{number}") for number in range(50)]

    await asyncio.gather(*(writer.record(record) for record in records))

    rows = await stored(database)
    assert set(rows) == {record.release_id for record in records}
    first = records[0]
    assert rows[first.release_id] == (first.subject_id, first.released, first.withheld)
    await writer.close()


async def test_a_single_record_is_written_without_waiting_for_company(database: Database) -> None:
    writer = AuditWriter(database)
    record = release("shopper-alone")

    await writer.record(record)

    assert set(await stored(database)) == {record.release_id}
    await writer.close()


async def test_a_failed_batch_fails_every_release_in_it_and_later_batches_still_commit(database: Database) -> None:
    writer = AuditWriter(database)
    duplicate = str(uuid.uuid4())
    await writer.record(release("shopper-first", duplicate))

    # One row repeats a primary key: the whole batch is rolled back and each of its callers gets a 503.
    outcomes = await asyncio.gather(
        writer.record(release("shopper-a")),
        writer.record(release("shopper-b", duplicate)),
        writer.record(release("shopper-c")),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes), outcomes
    assert {outcome.status_code for outcome in outcomes if isinstance(outcome, Unavailable)} == {503}
    assert set(await stored(database)) == {duplicate}

    after = release("shopper-after")
    await writer.record(after)
    assert set(await stored(database)) == {duplicate, after.release_id}
    await writer.close()


async def test_a_database_that_refuses_the_insert_fails_closed(database: Database) -> None:
    writer = AuditWriter(database)
    async with database.engine.begin() as connection:
        await connection.execute(text("DROP TABLE release_record"))

    with pytest.raises(Unavailable):
        await writer.record(release("shopper-lost"))


async def test_a_closed_writer_refuses_new_records(database: Database) -> None:
    writer = AuditWriter(database)
    await writer.record(release("shopper-before"))
    await writer.close()

    with pytest.raises(Unavailable):
        await writer.record(release("shopper-after"))
    assert len(await stored(database)) == 1


async def test_a_caller_that_goes_away_still_has_its_row_written(database: Database) -> None:
    writer = AuditWriter(database)
    gone = release("shopper-gone")
    waiting = asyncio.ensure_future(writer.record(gone))
    await asyncio.sleep(0)  # queued
    waiting.cancel()
    stays = release("shopper-stays")

    await writer.record(stays)

    assert set(await stored(database)) == {gone.release_id, stays.release_id}
    await writer.close()


async def test_a_release_row_is_stored_column_for_column(database: Database) -> None:
    """The releases hand the writer plain rows; what is stored is what an ORM record would hold."""
    writer = AuditWriter(database)
    rows = [
        ReleaseRow(
            release_id=str(uuid.uuid4()),
            client_id="web-1",
            channel="web",
            purpose="personalize.content.profiled",
            subject_id="shopper-row",
            released=["first_name", "sizes"],
            withheld=[{"field": "email", "reason": "consent_withdrawn"}, {"field": 'note "é"', "reason": "x"}],
            consent_event_id=str(uuid.uuid4()),
            released_at=datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        ),
        ReleaseRow(
            release_id=str(uuid.uuid4()),
            client_id="web-1",
            channel="web",
            purpose="personalize.content.profiled",
            subject_id="shopper-nothing",
            released=[],
            withheld=[],
            released_at=datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC),
        ),
    ]
    await asyncio.gather(*(writer.record(row) for row in rows), writer.record(release("shopper-orm")))
    await writer.close()
    async with database.sessionmaker() as session:
        for row in rows:
            stored_row = await session.get(ReleaseRecord, row.release_id)
            assert stored_row is not None
            expected = msgspec.structs.asdict(row)
            found = {name: getattr(stored_row, name) for name in expected}
            found["released_at"] = as_utc(found["released_at"])
            assert found == expected


class CountingWriter(AuditWriter):
    """The writer, noting the size of each batch it commits."""

    def __init__(self, database: Database, linger: Linger) -> None:
        super().__init__(database, linger=linger)
        self.batches: list[int] = []

    async def _write(self, batch: list[Any]) -> None:
        self.batches.append(len(batch))
        await super()._write(batch)


async def test_a_lone_release_is_not_held_back_by_the_linger(database: Database) -> None:
    writer = CountingWriter(database, Linger(60.0, enough=8))
    record = release("shopper-alone")

    await asyncio.wait_for(writer.record(record), 5)

    assert set(await stored(database)) == {record.release_id}
    assert writer.batches == [1]
    await writer.close()


async def test_rows_that_find_others_waiting_linger_until_enough_have_come(database: Database) -> None:
    writer = CountingWriter(database, Linger(60.0, enough=5, siblings=2))
    records = [release(f"shopper-{number}") for number in range(5)]
    first_four = [asyncio.ensure_future(writer.record(record)) for record in records[:4]]
    for _ in range(5):
        await asyncio.sleep(0)
    assert writer.batches == []  # four waiting: the batch lingers for a fifth
    assert not any(task.done() for task in first_four)  # and nothing is released before its row commits

    await asyncio.wait_for(asyncio.gather(*first_four, writer.record(records[4])), 5)

    assert writer.batches == [5]
    assert set(await stored(database)) == {record.release_id for record in records}
    await writer.close()


async def test_a_batch_lingers_for_rows_on_their_way_as_for_rows_already_queued(database: Database) -> None:
    """A decision waits for the rules service before its row comes: the batch ahead of it waits too."""
    writer = CountingWriter(database, Linger(60.0, enough=3, siblings=2))
    records = [release(f"shopper-{number}") for number in range(3)]
    with writer.expecting(), writer.expecting():
        first = asyncio.ensure_future(writer.record(records[0]))
        for _ in range(5):
            await asyncio.sleep(0)
        assert writer.batches == []  # one queued, two on their way
    await asyncio.wait_for(asyncio.gather(first, *(writer.record(record) for record in records[1:])), 5)

    assert writer.batches == [3]
    await writer.close()
