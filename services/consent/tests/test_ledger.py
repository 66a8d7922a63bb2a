"""The consent ledger: hash-chained, append-only, verifiable; state derived from it.

Every test runs on a real SQLite file and a real PostgreSQL schema, migrated by the service's own
migrations. Tampering goes straight to the database, as an attacker with table access would.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.consent.chain import event_hash
from services.consent.repository import ConsentRepository
from services.consent.schemas import Evidence, RecordedConsent
from services.consent.service import ConsentService
from services.consent.tests.support import KEYS, POLICY, PROFILED, SMS, record, record_alone, verify
from tillit.db import Database
from tillit.problems import Unprocessable
from tillit.types import utcnow

pytestmark = pytest.mark.anyio


async def tamper(database: Database, *statements: str, **parameters: Any) -> None:
    """Change ledger rows behind the service's back (past the append-only triggers)."""
    async with database.engine.begin() as connection:
        await connection.execute(text("INSERT INTO ledger_erasure_permit (id, reason) VALUES (1, 'tamper test')"))
        for statement in statements:
            await connection.execute(text(statement), parameters)
        await connection.execute(text("DELETE FROM ledger_erasure_permit"))


async def seed(database: Database) -> dict[str, list[RecordedConsent]]:
    """Three shoppers with a few events each; Astrid's are the ones tampered with."""
    events: dict[str, list[RecordedConsent]] = {"astrid": [], "lars": [], "kadri": []}
    for action in ("give", "withdraw", "give", "withdraw"):
        events["astrid"].append(await record(database, "astrid", action=action, evidence=Evidence(ip="10.1.2.3")))
    events["lars"].append(await record(database, "lars", SMS))
    events["kadri"].append(await record(database, "kadri", action="refuse"))
    return events


async def test_an_untouched_ledger_verifies(database: Database) -> None:
    await seed(database)
    report = await verify(database)
    assert report.ok, report
    assert (report.chains, report.events) == (3, 6)


async def test_each_event_chains_to_the_one_before(database: Database) -> None:
    first = await record(database, "astrid")
    second = await record(database, "astrid", action="withdraw")
    other = await record(database, "lars")
    assert (first.event.seq, second.event.seq, other.event.seq) == (1, 2, 1)
    async with database.sessionmaker() as session:
        events = await ConsentRepository(session).events_for("astrid")
    assert events[1].prev_hash == events[0].hash == first.event.hash
    assert events[0].evidence == {}
    assert events[0].personal_salt is not None


@pytest.mark.parametrize("statement", ["UPDATE consent_event SET action = 'given'", "DELETE FROM consent_event"])
async def test_the_database_refuses_to_change_ledger_rows(database: Database, statement: str) -> None:
    await record(database, "astrid")
    with pytest.raises(DBAPIError, match="append-only"):
        async with database.engine.begin() as connection:
            await connection.execute(text(statement))
    assert (await verify(database)).ok


async def test_an_edited_event_is_named(database: Database) -> None:
    events = await seed(database)
    withdrawal = events["astrid"][1].event
    await tamper(database, "UPDATE consent_event SET action = 'given' WHERE id = :id", id=withdrawal.id)
    report = await verify(database)
    assert not report.ok
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.event_id, report.first_break.seq) == (
        "altered",
        withdrawal.id,
        2,
    )
    assert report.first_break.subject_id == "astrid"


async def test_edited_evidence_is_caught(database: Database) -> None:
    events = await seed(database)
    target = events["astrid"][0].event
    await tamper(database, """UPDATE consent_event SET evidence = '{"ip": "192.0.2.0"}' WHERE id = :id""", id=target.id)
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.event_id) == ("altered", target.id)


async def test_a_deleted_middle_event_is_named(database: Database) -> None:
    events = await seed(database)
    await tamper(database, "DELETE FROM consent_event WHERE id = :id", id=events["astrid"][1].event.id)
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.seq) == ("missing", 2)
    assert "position 2 is missing" in report.first_break.detail


async def test_a_deleted_latest_event_is_caught(database: Database) -> None:
    events = await seed(database)
    await tamper(database, "DELETE FROM consent_event WHERE id = :id", id=events["astrid"][-1].event.id)
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.seq, report.first_break.subject_id) == ("missing", 4, "astrid")
    assert "latest events were removed" in report.first_break.detail


async def test_a_subject_whose_every_event_was_deleted_is_caught(database: Database) -> None:
    await seed(database)
    await tamper(database, "DELETE FROM consent_event WHERE subject_id = 'kadri'")
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.subject_id) == ("missing", "kadri")


async def test_reordered_events_are_caught(database: Database) -> None:
    events = await seed(database)
    first, second = events["astrid"][0].event.id, events["astrid"][1].event.id
    await tamper(
        database,
        "UPDATE consent_event SET seq = -1 WHERE id = :first",
        "UPDATE consent_event SET seq = 1 WHERE id = :second",
        "UPDATE consent_event SET seq = 2 WHERE id = :first",
        first=first,
        second=second,
    )
    report = await verify(database)
    assert report.first_break is not None
    assert report.first_break.kind == "broken_link"
    assert (report.first_break.seq, report.first_break.event_id) == (1, second)


async def test_an_appended_forgery_is_caught_even_with_a_valid_hash(database: Database) -> None:
    events = await seed(database)
    last = events["astrid"][-1].event
    async with database.sessionmaker() as session:
        stored = (await ConsentRepository(session).events_for("astrid"))[-1]
    now = datetime.now(UTC)
    forged = event_hash(
        chain_id=stored.chain_id,
        seq=5,
        prev_hash=last.hash,
        event_id="forged-event",
        purpose=PROFILED,
        action="given",
        notice_version=None,
        source="preference_page",
        collected_at=now,
        recorded_at=now,
        personal=stored.personal_digest,
    )
    await tamper(
        database,
        "INSERT INTO consent_event (id, chain_id, seq, subject_id, purpose, action, source, collected_at, "
        "recorded_at, personal_digest, prev_hash, hash) VALUES ('forged-event', :chain, 5, 'astrid', :purpose, "
        "'given', 'preference_page', :now, :now, :personal, :prev, :hash)",
        chain=stored.chain_id,
        purpose=PROFILED,
        now=now,
        personal=stored.personal_digest,
        prev=last.hash,
        hash=forged,
    )
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.event_id) == ("inserted", "forged-event")


async def test_a_removed_chain_head_is_caught(database: Database) -> None:
    await seed(database)
    await tamper(database, "DELETE FROM consent_chain WHERE subject_id = 'lars'")
    report = await verify(database)
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.subject_id) == ("unknown_chain", "lars")


async def test_an_event_moved_to_another_subject_is_caught(database: Database) -> None:
    events = await seed(database)
    await tamper(
        database, "UPDATE consent_event SET subject_id = 'lars' WHERE id = :id", id=events["astrid"][0].event.id
    )
    report = await verify(database)
    assert report.first_break is not None
    assert report.first_break.kind == "reassigned"


async def test_state_is_derived_from_the_latest_event(database: Database) -> None:
    await record(database, "astrid")
    withdrawn = await record(database, "astrid", action="withdraw")
    refused = await record(database, "astrid", SMS, action="refuse")
    async with database.sessionmaker() as session:
        current = await ConsentService(ConsentRepository(session), POLICY, KEYS).current("astrid")
    by_purpose = {state.purpose: state for state in current.consents}
    assert by_purpose[PROFILED].status == "withdrawn"
    assert by_purpose[PROFILED].event_id == withdrawn.event.id
    assert not by_purpose[PROFILED].active
    assert by_purpose[SMS].status == "refused"
    assert by_purpose[SMS].event_id == refused.event.id


async def test_a_backdated_event_enters_the_ledger_without_overturning_a_later_decision(database: Database) -> None:
    withdrawn = await record(database, "astrid", action="withdraw")
    imported = await record(database, "astrid", source="import", collected_at=datetime.now(UTC) - timedelta(days=30))
    assert imported.event.seq == 2
    assert (imported.state.status, imported.state.event_id) == ("withdrawn", withdrawn.event.id)
    assert (await verify(database)).ok


async def test_consent_expires_after_the_policy_lifetime(database: Database) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2 * 365 + 30)
    recorded = await record(database, "astrid", collected_at=long_ago)
    assert recorded.state.status == "expired"
    assert not recorded.state.active
    assert recorded.state.expires_at is not None
    assert recorded.state.expires_at < datetime.now(UTC)
    fresh = await record(database, "astrid", SMS)
    assert fresh.state.active
    assert fresh.state.expires_at is not None
    assert fresh.state.expires_at > datetime.now(UTC) + timedelta(days=300)


async def test_consent_collected_in_the_future_is_refused(database: Database) -> None:
    with pytest.raises(Unprocessable, match="lies in the future"):
        await record(database, "astrid", collected_at=datetime.now(UTC) + timedelta(hours=1))
    report = await verify(database)
    assert (report.ok, report.events) == (True, 0)


@pytest.mark.parametrize("write", [record, record_alone], ids=["in_a_transaction", "lone_write"])
async def test_a_crash_mid_write_leaves_no_half_event(
    database: Database, monkeypatch: pytest.MonkeyPatch, write: Any
) -> None:
    """Whether the write is a transaction or one compare-and-set statement, a failure before its answer
    (here: the receipt cannot be signed) leaves nothing behind."""
    await write(database, "astrid")

    def crash(*_: Any) -> str:
        raise RuntimeError("power cut after the ledger was written, before the answer")

    monkeypatch.setattr("services.consent.service.sign_receipt", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        await write(database, "astrid", action="withdraw")
    monkeypatch.undo()
    report = await verify(database)
    assert (report.ok, report.events) == (True, 1)
    async with database.sessionmaker() as session:
        current = await ConsentService(ConsentRepository(session), POLICY, KEYS).current("astrid")
    assert current.consents[0].status == "given"


async def test_concurrent_writers_of_one_subject_keep_one_chain_and_a_true_state(database: Database) -> None:
    actions = ["give", "withdraw"] * 12

    async def one(action: str) -> None:
        await record(database, "astrid", action=action)

    await asyncio.gather(*(one(action) for action in actions), record(database, "lars"), record(database, "kadri"))
    report = await verify(database)
    assert report.ok, report
    assert report.events == len(actions) + 2
    async with database.sessionmaker() as session:
        service = ConsentService(ConsentRepository(session), POLICY, KEYS)
        history = await service.history("astrid")
        current = await service.current("astrid")
    assert [event.seq for event in history.events] == list(range(1, len(actions) + 1))
    last = history.events[-1]
    assert current.consents[0].event_id == last.id
    assert current.consents[0].status == last.action


async def test_lone_writers_of_one_subject_keep_one_chain_and_a_true_state(database: Database) -> None:
    """Requests whose event is their only write (on PostgreSQL: one autocommitted statement each)."""
    actions = ["give", "withdraw"] * 12

    await asyncio.gather(
        *(record_alone(database, "astrid", action=action) for action in actions),
        record_alone(database, "lars"),
        record(database, "astrid", SMS),
    )
    report = await verify(database)
    assert report.ok, report
    assert report.events == len(actions) + 2
    async with database.sessionmaker() as session:
        service = ConsentService(ConsentRepository(session), POLICY, KEYS)
        history = await service.history("astrid")
        current = {state.purpose: state for state in (await service.current("astrid")).consents}
    assert [event.seq for event in history.events] == list(range(1, len(actions) + 2))
    last = [event for event in history.events if event.purpose == PROFILED][-1]
    assert current[PROFILED].event_id == last.id
    assert current[PROFILED].status == last.action


async def test_a_backdated_lone_write_answers_the_state_that_stands(database: Database) -> None:
    await record_alone(database, "astrid")
    earlier = utcnow() - timedelta(days=1)
    recorded = await record_alone(database, "astrid", action="withdraw", collected_at=earlier)
    assert recorded.event.action == "withdrawn"
    assert recorded.state.status == "given"
    assert (await verify(database)).ok


async def test_an_uncontended_lone_write_takes_no_lock_on_postgresql(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a concurrent writer of the subject the compare-and-set applies at once."""
    await record_alone(database, "astrid")
    if database.is_sqlite:
        return  # SQLite writes take turns in a transaction: the locked path is the only one

    async def locked_path(*_: Any, **__: Any) -> Any:
        raise AssertionError("the lone write fell back to the locked path")

    monkeypatch.setattr(ConsentService, "_append", locked_path)
    for action in ("withdraw", "give", "withdraw"):
        await record_alone(database, "astrid", action=action)
    monkeypatch.undo()
    report = await verify(database)
    assert (report.ok, report.events) == (True, 4)
