"""The chain head cache: a lone write skips reading the head it committed last, and stays correct.

A held head may be stale — another replica, a locked write, an import moved the chain meanwhile —
and then the write's compare-and-set writes nothing; the write must read the head and still chain
correctly. These tests write behind a cache's back and check the ledger, its order and the state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.consent.chain import ChainHead
from services.consent.heads import ChainHeadCache
from services.consent.repository import ConsentRepository
from services.consent.service import ConsentService
from services.consent.tests.support import KEYS, POLICY, PROFILED, SMS, record, record_alone, verify
from tillit.db import Database

pytestmark = pytest.mark.anyio


def _head(subject: str, length: int, chain: str = "chain-1") -> ChainHead:
    return ChainHead(chain_id=chain, subject_id=subject, length=length, head_hash=f"{length:064x}")


def test_the_cache_keeps_the_newest_committed_head_and_is_bounded() -> None:
    cache = ChainHeadCache(max_subjects=2)
    cache.committed(_head("astrid", 2))
    cache.committed(_head("astrid", 1))  # an older commit answered late
    assert cache.get("astrid") == _head("astrid", 2)
    cache.committed(_head("astrid", 1, chain="chain-2"))  # a new chain of the subject replaces it
    assert cache.get("astrid") == _head("astrid", 1, chain="chain-2")
    cache.committed(_head("lars", 1))
    assert cache.get("astrid") is not None  # used last: lars is the oldest now
    cache.committed(_head("kadri", 1))
    assert (len(cache), cache.get("lars"), cache.get("kadri")) == (2, None, _head("kadri", 1))
    cache.committed(ChainHead("erased", None, 3, "0" * 64))
    assert len(cache) == 2
    with pytest.raises(ValueError, match="at least one"):
        ChainHeadCache(0)


def test_forgetting_a_stale_head_keeps_a_newer_one() -> None:
    cache = ChainHeadCache()
    cache.committed(_head("astrid", 3))
    cache.forget("astrid", _head("astrid", 2))
    assert cache.get("astrid") == _head("astrid", 3)
    cache.forget("astrid", _head("astrid", 3))
    assert cache.get("astrid") is None
    cache.committed(_head("astrid", 4))
    cache.forget("astrid")
    assert cache.get("astrid") is None


async def _history(database: Database, subject: str) -> tuple[list[int], dict[str, Any], Any]:
    async with database.sessionmaker() as session:
        service = ConsentService(ConsentRepository(session), POLICY, KEYS)
        history = await service.history(subject)
        current = {state.purpose: state for state in (await service.current(subject)).consents}
    return [event.seq for event in history.events], current, history.events


def _postgres_only(database: Database) -> None:
    if database.is_sqlite:
        pytest.skip("lone writes are PostgreSQL's (SQLite writes take turns in a transaction)")


async def test_a_held_head_makes_the_write_one_statement(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    _postgres_only(database)
    heads = ChainHeadCache()
    first = await record_alone(database, "astrid", heads=heads)
    held = heads.get("astrid")
    assert held is not None
    assert (held.length, held.head_hash) == (1, first.event.hash)

    async def no_read(*_: Any, **__: Any) -> Any:
        raise AssertionError("the write read the chain head although it held it")

    monkeypatch.setattr(ConsentRepository, "read_chain", no_read)
    second = await record_alone(database, "astrid", action="withdraw", heads=heads)
    monkeypatch.undo()
    assert heads.get("astrid") == ChainHead(held.chain_id, "astrid", 2, second.event.hash)
    assert (await verify(database)).ok


async def test_replicas_with_their_own_caches_keep_one_chain(database: Database) -> None:
    """Two processes write one subject in turn: each one's held head is always stale."""
    _postgres_only(database)
    replicas = [ChainHeadCache(), ChainHeadCache()]
    actions = ["give", "withdraw"] * 4
    for number, action in enumerate(actions):
        recorded = await record_alone(database, "astrid", action=action, heads=replicas[number % 2])
        assert recorded.event.seq == number + 1
        held = replicas[number % 2].get("astrid")
        assert held is not None
        assert (held.length, held.head_hash) == (number + 1, recorded.event.hash)
    report = await verify(database)
    assert (report.ok, report.events) == (True, len(actions))
    seqs, current, events = await _history(database, "astrid")
    assert seqs == list(range(1, len(actions) + 1))
    assert current[PROFILED].event_id == events[-1].id


async def test_writes_behind_the_cache_are_chained_onto(database: Database) -> None:
    """A locked write (a transaction, as with an Idempotency-Key) moves the head the cache holds."""
    _postgres_only(database)
    heads = ChainHeadCache()
    await record_alone(database, "astrid", heads=heads)
    await record(database, "astrid", SMS)  # no cache: as another replica's locked write
    stale = heads.get("astrid")
    assert stale is not None
    assert stale.length == 1
    recorded = await record_alone(database, "astrid", action="withdraw", heads=heads)
    assert recorded.event.seq == 3
    assert recorded.state.status == "withdrawn"
    report = await verify(database)
    assert (report.ok, report.events) == (True, 3)


async def test_a_locked_write_of_this_process_drops_the_held_head(database: Database) -> None:
    _postgres_only(database)
    heads = ChainHeadCache()
    await record_alone(database, "astrid", heads=heads)
    async with database.sessionmaker() as session, session.begin():
        service = ConsentService(ConsentRepository(session), POLICY, KEYS, heads=heads)
        await service.apply_gpc("astrid", (await record_alone(database, "lars", heads=heads)).event.evidence)
    assert heads.get("astrid") is None
    assert heads.get("lars") is not None
    assert (await verify(database)).ok


async def test_a_failed_statement_leaves_the_cache_as_it_was(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgres_only(database)
    heads = ChainHeadCache()
    await record_alone(database, "astrid", heads=heads)
    held = heads.get("astrid")

    async def broken(*_: Any, **__: Any) -> bool:
        raise ConnectionError("the connection dropped")

    monkeypatch.setattr(ConsentRepository, "append_if_head", broken)
    with pytest.raises(ConnectionError):
        await record_alone(database, "astrid", action="withdraw", heads=heads)
    monkeypatch.undo()
    assert heads.get("astrid") == held
    await record_alone(database, "astrid", action="withdraw", heads=heads)
    report = await verify(database)
    assert (report.ok, report.events) == (True, 2)


async def test_concurrent_writers_sharing_one_cache_keep_one_chain(database: Database) -> None:
    _postgres_only(database)
    heads = ChainHeadCache()
    actions = ["give", "withdraw"] * 10
    await asyncio.gather(*(record_alone(database, "astrid", action=action, heads=heads) for action in actions))
    await asyncio.gather(*(record_alone(database, "astrid", action=action, heads=heads) for action in actions))
    report = await verify(database)
    assert (report.ok, report.events) == (True, 2 * len(actions))
    seqs, current, events = await _history(database, "astrid")
    assert seqs == list(range(1, 2 * len(actions) + 1))
    assert current[PROFILED].event_id == events[-1].id
    held = heads.get("astrid")  # None if the last commit was a writer that lost the race (locked path)
    assert held is None or (held.length, held.head_hash) == (events[-1].seq, events[-1].hash)


async def test_a_first_event_creates_its_chain_in_the_same_statement(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _postgres_only(database)
    calls: list[str] = []
    read, append = ConsentRepository.read_chain, ConsentRepository.append_if_head

    async def spy_read(self: ConsentRepository, *args: Any) -> Any:
        calls.append("read")
        return await read(self, *args)

    async def spy_append(self: ConsentRepository, *args: Any, **kwargs: Any) -> bool:
        calls.append("first" if kwargs.get("first") else "append")
        return await append(self, *args, **kwargs)

    monkeypatch.setattr(ConsentRepository, "read_chain", spy_read)
    monkeypatch.setattr(ConsentRepository, "append_if_head", spy_append)
    recorded = await record_alone(database, "astrid")
    assert calls == ["read", "first"]
    assert (recorded.event.seq, recorded.state.status) == (1, "given")
    calls.clear()
    await record_alone(database, "astrid", action="withdraw")
    assert calls == ["read", "append"]
    monkeypatch.undo()
    report = await verify(database)
    assert (report.ok, report.events, report.chains) == (True, 2, 1)


async def test_first_events_of_one_subject_at_once_make_one_chain(database: Database) -> None:
    """All but one creation finds the chain made: each reads it and chains on (or queues for its lock)."""
    _postgres_only(database)
    heads = ChainHeadCache()
    await asyncio.gather(*(record_alone(database, "astrid", heads=heads) for _ in range(8)))
    report = await verify(database)
    assert (report.ok, report.events, report.chains) == (True, 8, 1)
    seqs, _, _ = await _history(database, "astrid")
    assert seqs == list(range(1, 9))
