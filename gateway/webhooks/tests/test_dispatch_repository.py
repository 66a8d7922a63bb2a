"""Claiming deliveries and moving the feed cursor hold with two dispatchers on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.app import MIGRATIONS
from gateway.webhooks.models import Webhook
from gateway.webhooks.repository import DispatchRepository
from tillit.db import Database
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


async def add_pending(database: Database, count: int) -> None:
    async with database.sessionmaker() as session, session.begin():
        session.add(
            Webhook(
                id="w1",
                client_id="email-1",
                channel="email",
                url="https://hooks.shop.example/",
                secret="whsec_x",
                event_types=["consent.withdrawn"],
                created_at=NOW,
            )
        )
        await session.flush()
        rows = [
            {
                "id": f"d{seq}",
                "webhook_id": "w1",
                "change_seq": seq,
                "event_type": "consent.withdrawn",
                "payload": "{}",
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": NOW,
                "last_attempt_at": None,
                "last_status_code": None,
                "last_error": None,
                "delivered_at": None,
                "created_at": NOW,
            }
            for seq in range(1, count + 1)
        ]
        await DispatchRepository(session).add_deliveries(rows)


async def claim(database: Database, now: datetime, limit: int = 10, hold: float = 0.0) -> set[str]:
    async with database.sessionmaker() as session, session.begin():
        claimed = await DispatchRepository(session).claim_due(now, now + timedelta(minutes=1), limit)
        await asyncio.sleep(hold)
    return {delivery.id for delivery in claimed}


async def test_two_dispatchers_never_claim_the_same_delivery(database: Database) -> None:
    await add_pending(database, 12)
    first, second = await asyncio.gather(claim(database, NOW, 8, hold=0.2), claim(database, NOW, 8, hold=0.2))
    assert not first & second
    assert first | second == {f"d{seq}" for seq in range(1, 13)}
    assert await claim(database, NOW + timedelta(seconds=59)) == set()


async def test_a_lease_that_runs_out_makes_the_delivery_due_again(database: Database) -> None:
    await add_pending(database, 1)
    assert await claim(database, NOW) == {"d1"}
    assert await claim(database, NOW + timedelta(seconds=30)) == set()
    assert await claim(database, NOW + timedelta(minutes=2)) == {"d1"}


async def test_a_delivered_or_failed_delivery_is_never_claimed(database: Database) -> None:
    await add_pending(database, 2)
    async with database.sessionmaker() as session, session.begin():
        repository = DispatchRepository(session)
        await repository.record_outcome("d1", {"status": "delivered", "next_attempt_at": None, "attempts": 1})
        await repository.record_outcome("d2", {"status": "failed", "next_attempt_at": None, "attempts": 20})
    assert await claim(database, NOW + timedelta(days=1)) == set()


async def test_finished_deliveries_are_forgotten_after_the_retention(database: Database) -> None:
    await add_pending(database, 3)
    async with database.sessionmaker() as session, session.begin():
        repository = DispatchRepository(session)
        await repository.record_outcome("d1", {"status": "delivered", "next_attempt_at": None})
        await repository.record_outcome("d2", {"status": "failed", "next_attempt_at": None})
    async with database.sessionmaker() as session, session.begin():
        repository = DispatchRepository(session)
        assert await repository.forget_finished(NOW) == 0
        assert await repository.forget_finished(NOW + timedelta(seconds=1)) == 2
    assert await claim(database, NOW) == {"d3"}


async def test_only_one_replica_moves_the_cursor_from_where_both_read_it(database: Database) -> None:
    async def advance(to: int) -> bool:
        async with database.sessionmaker() as session, session.begin():
            return await DispatchRepository(session).advance_cursor(0, to, NOW)

    assert sorted(await asyncio.gather(advance(5), advance(5))) == [False, True]
    async with database.sessionmaker() as session:
        assert await DispatchRepository(session).cursor() == 5
