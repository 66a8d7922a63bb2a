"""Data-subject requests: deadlines, the lifecycle, the one extension, overdue, listing, races.

Every test that touches storage runs on a real SQLite file and a real PostgreSQL schema, migrated by
all of the consent service's migrations. Time comes from a clock the test sets.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from services.consent.app import MIGRATIONS
from services.consent.requests.repository import RequestRepository
from services.consent.requests.schemas import (
    CreateRequest,
    ExtendRequest,
    RequestOut,
    RequestPage,
    TransitionRequest,
)
from services.consent.requests.service import LEGAL_TRANSITIONS, RequestService, due_date, encode_cursor
from tillit.db import Database
from tillit.policy import Policy, load_policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.settings import REPO_ROOT
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio

POLICY: Policy = load_policy(REPO_ROOT / "policies")
EMAIL = "marketing.communications.email"
SMS = "marketing.communications.sms"
RECEIVED = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)
STATUSES = ("received", "verified", "in_progress", "completed", "rejected")
PATH_TO = {
    "received": [],
    "verified": ["verified"],
    "in_progress": ["verified", "in_progress"],
    "completed": ["verified", "in_progress", "completed"],
    "rejected": ["rejected"],
}
T = TypeVar("T")


class Clock:
    """The service's clock, moved by the test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


@pytest.fixture
def clock() -> Clock:
    return Clock(RECEIVED + timedelta(hours=1))


async def run(database: Database, clock: Clock, work: Callable[[RequestService], Awaitable[T]]) -> T:
    """One request's worth of work: a session whose transaction commits when the work is done."""
    async with database.sessionmaker() as session, session.begin():
        return await work(RequestService(RequestRepository(session), POLICY.purposes, clock))


async def create(database: Database, clock: Clock, **fields: Any) -> RequestOut:
    values: dict[str, Any] = {"subject_id": "astrid", "type": "access", "channel": "email", "received_at": RECEIVED}
    command = CreateRequest(**(values | fields))
    return await run(database, clock, lambda service: service.create(command))


async def move(database: Database, clock: Clock, request_id: str, to: str, note: str | None = None) -> RequestOut:
    command = TransitionRequest(to=to, actor="dpo:anna", note=note)  # type: ignore[arg-type]
    return await run(database, clock, lambda service: service.transition(request_id, command))


async def extend(database: Database, clock: Clock, request_id: str, months: int = 2) -> RequestOut:
    command = ExtendRequest(months=months, reason="many systems to search", actor="dpo:anna")  # type: ignore[arg-type]
    return await run(database, clock, lambda service: service.extend(request_id, command))


async def page(database: Database, clock: Clock, **filters: Any) -> RequestPage:
    return await run(database, clock, lambda service: service.page(**filters))


async def walk(database: Database, clock: Clock, request_id: str, status: str) -> RequestOut:
    record = await run(database, clock, lambda service: service.get(request_id))
    for step in PATH_TO[status]:
        record = await move(database, clock, request_id, step, note="done" if step == "rejected" else None)
    return record


@pytest.mark.parametrize(
    ("received", "months", "due"),
    [
        (datetime(2024, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2024, 2, 29, 9, 30, tzinfo=UTC)),
        (datetime(2023, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2023, 2, 28, 9, 30, tzinfo=UTC)),
        (datetime(2024, 3, 31, tzinfo=UTC), 1, datetime(2024, 4, 30, tzinfo=UTC)),
        (datetime(2024, 12, 15, 23, 59, tzinfo=UTC), 1, datetime(2025, 1, 15, 23, 59, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), 2, datetime(2024, 3, 31, tzinfo=UTC)),
        (datetime(2024, 1, 31, tzinfo=UTC), 3, datetime(2024, 4, 30, tzinfo=UTC)),
        (datetime(2024, 11, 30, tzinfo=UTC), 3, datetime(2025, 2, 28, tzinfo=UTC)),
    ],
)
def test_due_dates_are_calendar_months_clamped_to_the_month_end(received: datetime, months: int, due: datetime) -> None:
    assert due_date(received, months) == due


async def test_a_new_request_is_due_one_calendar_month_after_receipt(database: Database, clock: Clock) -> None:
    record = await create(database, clock, actor="dpo:anna")
    assert (record.status, record.type, record.version) == ("received", "access", 1)
    assert record.received_at == RECEIVED
    assert record.due_at == datetime(2024, 2, 29, 9, 30, tzinfo=UTC)
    assert record.extension is None
    assert not record.overdue
    [step] = record.history
    assert (step.seq, step.action, step.from_status, step.to_status) == (1, "received", None, "received")
    assert (step.actor, step.at, step.due_at) == ("dpo:anna", clock.now, record.due_at)


async def test_received_at_defaults_to_now_and_the_channel_is_the_first_actor(database: Database, clock: Clock) -> None:
    clock.now = datetime(2023, 1, 31, 12, tzinfo=UTC)
    record = await create(database, clock, received_at=None, channel="preference_center")
    assert record.received_at == clock.now
    assert record.due_at == datetime(2023, 2, 28, 12, tzinfo=UTC)
    assert record.history[0].actor == "preference_center"


async def test_a_request_received_in_the_future_or_before_the_gdpr_is_refused(database: Database, clock: Clock) -> None:
    with pytest.raises(Unprocessable, match="lies in the future"):
        await create(database, clock, received_at=clock.now + timedelta(hours=1))
    ancient = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(Unprocessable, match="before the GDPR applied"):
        await create(database, clock, received_at=ancient)
    assert (await page(database, clock)).items == []


@pytest.mark.parametrize("start", STATUSES)
async def test_only_legal_transitions_succeed(database: Database, clock: Clock, start: str) -> None:
    for target in STATUSES:
        created = await create(database, clock)
        before = await walk(database, clock, created.id, start)
        assert before.status == start
        note = "identity could not be verified" if target == "rejected" else None
        if target in LEGAL_TRANSITIONS[start]:
            after = await move(database, clock, created.id, target, note=note)
            assert (after.status, after.version) == (target, before.version + 1)
            last = after.history[-1]
            assert (last.action, last.from_status, last.to_status, last.actor) == (
                "transition",
                start,
                target,
                "dpo:anna",
            )
            continue
        with pytest.raises(Conflict, match=f"is '{start}' and cannot become '{target}'") as raised:
            await move(database, clock, created.id, target, note=note)
        assert raised.value.slug == "illegal-transition"
        unchanged = await run(database, clock, lambda service, rid=created.id: service.get(rid))
        assert (unchanged.status, unchanged.version, len(unchanged.history)) == (
            start,
            before.version,
            len(before.history),
        )


async def test_the_whole_lifecycle_is_kept_in_the_history(database: Database, clock: Clock) -> None:
    created = await create(database, clock)
    for hours, status in enumerate(("verified", "in_progress"), start=2):
        clock.now = RECEIVED + timedelta(hours=hours)
        await move(database, clock, created.id, status)
    clock.now = RECEIVED + timedelta(days=3)
    done = await move(database, clock, created.id, "completed", note="export sent by e-mail")
    assert (done.status, done.closed_at, done.resolution) == ("completed", clock.now, "export sent by e-mail")
    assert [(s.seq, s.from_status, s.to_status) for s in done.history] == [
        (1, None, "received"),
        (2, "received", "verified"),
        (3, "verified", "in_progress"),
        (4, "in_progress", "completed"),
    ]
    assert [s.at for s in done.history] == [
        RECEIVED + timedelta(hours=1),
        RECEIVED + timedelta(hours=2),
        RECEIVED + timedelta(hours=3),
        RECEIVED + timedelta(days=3),
    ]
    assert done.history[-1].note == "export sent by e-mail"


async def test_a_rejection_needs_a_reason(database: Database, clock: Clock) -> None:
    created = await create(database, clock)
    with pytest.raises(Unprocessable, match="reason") as raised:
        await move(database, clock, created.id, "rejected")
    assert raised.value.slug == "reason-required"
    assert (await run(database, clock, lambda service: service.get(created.id))).status == "received"
    rejected = await move(database, clock, created.id, "rejected", note="manifestly unfounded (Art. 12(5))")
    assert (rejected.status, rejected.resolution) == ("rejected", "manifestly unfounded (Art. 12(5))")
    assert rejected.closed_at == clock.now


def test_blank_notes_and_reasons_are_refused_by_the_schema() -> None:
    for document in (
        {"months": 1, "reason": "  ", "actor": "dpo:anna"},
        {"months": 1, "actor": "dpo:anna"},
        {"months": 3, "reason": "busy", "actor": "dpo:anna"},
        {"months": 1, "reason": "busy", "actor": "Anna"},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(document, ExtendRequest)
    for note in ("\n", " \t ", "no\x00pe"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({"to": "rejected", "actor": "dpo:anna", "note": note}, TransitionRequest)
    accepted = msgspec.convert(
        {"to": "rejected", "actor": "dpo:anna", "note": "\n duplicate\nof #12 "}, TransitionRequest
    )
    assert accepted.note == "\n duplicate\nof #12 "


@pytest.mark.parametrize(("months", "until"), [(1, datetime(2024, 3, 31, 9, 30, tzinfo=UTC)), (2, None)])
async def test_one_extension_moves_the_deadline(
    database: Database, clock: Clock, months: int, until: datetime | None
) -> None:
    until = until or datetime(2024, 4, 30, 9, 30, tzinfo=UTC)
    created = await create(database, clock)
    await move(database, clock, created.id, "verified")
    clock.now = RECEIVED + timedelta(days=20)
    extended = await extend(database, clock, created.id, months)
    assert (extended.status, extended.due_at) == ("verified", until)
    assert extended.extension is not None
    assert (extended.extension.months, extended.extension.until, extended.extension.original_due_at) == (
        months,
        until,
        created.due_at,
    )
    assert (extended.extension.reason, extended.extension.actor, extended.extension.at) == (
        "many systems to search",
        "dpo:anna",
        clock.now,
    )
    step = extended.history[-1]
    assert (step.action, step.from_status, step.to_status, step.note, step.due_at) == (
        "extension",
        "verified",
        "verified",
        "many systems to search",
        until,
    )
    with pytest.raises(Conflict, match="already extended") as raised:
        await extend(database, clock, created.id, 1)
    assert raised.value.slug == "already-extended"
    clock.now = created.due_at + timedelta(days=1)
    assert not (await run(database, clock, lambda service: service.get(created.id))).overdue


@pytest.mark.parametrize("closed", ["completed", "rejected"])
async def test_a_closed_request_cannot_be_extended(database: Database, clock: Clock, closed: str) -> None:
    created = await create(database, clock)
    await walk(database, clock, created.id, closed)
    with pytest.raises(Conflict, match=f"is '{closed}'") as raised:
        await extend(database, clock, created.id)
    assert raised.value.slug == "request-closed"


async def test_an_extension_after_the_first_month_is_too_late(database: Database, clock: Clock) -> None:
    created = await create(database, clock)
    clock.now = created.due_at + timedelta(minutes=1)
    with pytest.raises(Conflict, match="within one month of receipt") as raised:
        await extend(database, clock, created.id)
    assert raised.value.slug == "extension-too-late"


async def test_overdue_is_computed_on_read_and_filterable(database: Database, clock: Clock) -> None:
    late = await create(database, clock, subject_id="late")
    done = await create(database, clock, subject_id="done")
    await walk(database, clock, done.id, "completed")
    extended = await create(database, clock, subject_id="extended")
    await extend(database, clock, extended.id, 1)
    clock.now = RECEIVED + timedelta(days=10)
    fresh = await create(database, clock, subject_id="fresh", received_at=RECEIVED + timedelta(days=10))

    clock.now = late.due_at
    assert not (await run(database, clock, lambda service: service.get(late.id))).overdue
    assert (await page(database, clock, overdue=True)).items == []

    clock.now = late.due_at + timedelta(seconds=1)
    assert (await run(database, clock, lambda service: service.get(late.id))).overdue
    overdue = await page(database, clock, overdue=True)
    assert [item.id for item in overdue.items] == [late.id]
    assert all(item.overdue for item in overdue.items)
    on_time = await page(database, clock, overdue=False)
    assert {item.id for item in on_time.items} == {done.id, extended.id, fresh.id}
    assert not any(item.overdue for item in on_time.items)

    clock.now = datetime(2024, 3, 31, 9, 30, 1, tzinfo=UTC)
    assert {item.id for item in (await page(database, clock, overdue=True)).items} == {late.id, extended.id, fresh.id}
    assert [item.id for item in (await page(database, clock, overdue=True, status="verified")).items] == []


async def test_listing_filters_newest_first(database: Database, clock: Clock) -> None:
    clock.now = RECEIVED + timedelta(days=30)
    made = {}
    for day, (subject, kind) in enumerate(
        [("astrid", "access"), ("lars", "erasure"), ("astrid", "erasure"), ("kadri", "access")]
    ):
        made[(subject, kind)] = await create(
            database, clock, subject_id=subject, type=kind, received_at=RECEIVED + timedelta(days=day)
        )
    await move(database, clock, made[("lars", "erasure")].id, "verified")

    everything = await page(database, clock)
    assert [(i.subject_id, i.type) for i in everything.items] == [
        ("kadri", "access"),
        ("astrid", "erasure"),
        ("lars", "erasure"),
        ("astrid", "access"),
    ]
    assert everything.next_cursor is None
    assert [i.received_at for i in everything.items] == sorted((i.received_at for i in everything.items), reverse=True)
    assert [i.history[0].to_status for i in everything.items] == ["received"] * 4
    erasures = await page(database, clock, request_type="erasure")
    assert [i.subject_id for i in erasures.items] == ["astrid", "lars"]
    astrid = await page(database, clock, subject_id="astrid")
    assert [i.type for i in astrid.items] == ["erasure", "access"]
    verified = await page(database, clock, status="verified")
    assert [i.id for i in verified.items] == [made[("lars", "erasure")].id]
    assert (await page(database, clock, subject_id="astrid", request_type="access", status="verified")).items == []


async def test_pages_follow_the_cursor_without_gaps_or_repeats(database: Database, clock: Clock) -> None:
    clock.now = RECEIVED + timedelta(days=30)
    ids = []
    for index in range(7):
        # Three share one receipt time: the id breaks the tie, so no request is skipped or repeated.
        received = RECEIVED + timedelta(days=min(index, 4))
        ids.append((await create(database, clock, subject_id=f"s{index}", received_at=received)).id)
    seen: list[str] = []
    sizes = []
    cursor = None
    while True:
        current = await page(database, clock, limit=2, cursor=cursor)
        seen += [item.id for item in current.items]
        sizes.append(len(current.items))
        if current.next_cursor is None:
            break
        cursor = current.next_cursor
    assert sizes == [2, 2, 2, 1]
    assert sorted(seen) == sorted(ids)
    assert len(set(seen)) == 7
    everything = await page(database, clock, limit=200)
    assert [item.id for item in everything.items] == seen
    assert (await page(database, clock, limit=1000)).next_cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        "AAAA",
        "not-base64!",
        "WzEsMl0",
        "eyJhIjoxfQ",
        base64.urlsafe_b64encode(b'["2024-01-31T09:30:00","x"]').decode(),
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00","x"]').decode(),
    ],
)
async def test_a_cursor_the_api_did_not_hand_out_is_refused(database: Database, clock: Clock, cursor: str) -> None:
    with pytest.raises(Unprocessable, match="cursor") as raised:
        await page(database, clock, cursor=cursor)
    assert raised.value.slug == "invalid-cursor"


async def test_a_cursor_survives_a_round_trip(database: Database, clock: Clock) -> None:
    created = await create(database, clock)
    async with database.sessionmaker() as session:
        stored = await RequestRepository(session).get(created.id)
    assert stored is not None
    assert (await page(database, clock, cursor=encode_cursor(stored))).items == []


async def test_an_objection_names_declared_purposes(database: Database, clock: Clock) -> None:
    objection = await create(database, clock, type="objection", purposes=[EMAIL, SMS, EMAIL])
    assert objection.purposes == [EMAIL, SMS]
    with pytest.raises(Unprocessable, match=r"'marketing\.carrier_pigeon' is not declared") as raised:
        await create(database, clock, type="objection", purposes=[EMAIL, "marketing.carrier_pigeon"])
    assert raised.value.status_code == 422
    assert raised.value.slug == "unknown-purpose"
    with pytest.raises(Unprocessable, match="names the purposes") as raised:
        await create(database, clock, type="objection")
    assert raised.value.slug == "purposes-required"
    with pytest.raises(Unprocessable, match="only an objection names purposes") as raised:
        await create(database, clock, type="erasure", purposes=[EMAIL])
    assert raised.value.slug == "purposes-not-allowed"
    assert [item.id for item in (await page(database, clock)).items] == [objection.id]


async def test_a_rectification_says_what_is_wrong(database: Database, clock: Clock) -> None:
    with pytest.raises(Unprocessable, match="what is wrong") as raised:
        await create(database, clock, type="rectification")
    assert raised.value.slug == "details-required"
    record = await create(database, clock, type="rectification", details="postal address is outdated")
    assert (record.type, record.details, record.purposes) == ("rectification", "postal address is outdated", [])


async def test_an_unknown_request_is_not_found(database: Database, clock: Clock) -> None:
    missing = "7b0a3c53-3f59-4d55-9d7c-2b0a4e1f1a11"
    for work in (
        lambda service: service.get(missing),
        lambda service: service.transition(missing, TransitionRequest(to="verified", actor="dpo:anna")),
        lambda service: service.extend(missing, ExtendRequest(months=1, reason="busy", actor="dpo:anna")),
    ):
        with pytest.raises(NotFound, match=missing):
            await run(database, clock, work)


async def race(database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch, *works: Any) -> list[Any]:
    """Run ``works`` in parallel sessions that all read the request before any of them writes."""
    barrier = asyncio.Barrier(len(works))
    original = RequestRepository.update_if_unchanged

    async def after_everyone_read(self: RequestRepository, *args: Any, **kwargs: Any) -> bool:
        await barrier.wait()
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(RequestRepository, "update_if_unchanged", after_everyone_read)
    try:
        return await asyncio.gather(*(run(database, clock, work) for work in works), return_exceptions=True)
    finally:
        monkeypatch.undo()


async def test_of_two_simultaneous_transitions_exactly_one_wins(
    database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create(database, clock)
    verify = TransitionRequest(to="verified", actor="dpo:anna")
    reject = TransitionRequest(to="rejected", actor="dpo:bo", note="duplicate of an earlier request")
    results = await race(
        database,
        clock,
        monkeypatch,
        lambda service: service.transition(created.id, verify),
        lambda service: service.transition(created.id, reject),
    )
    winners = [result for result in results if isinstance(result, RequestOut)]
    losers = [result for result in results if isinstance(result, Exception)]
    assert len(winners) == 1, results
    assert len(losers) == 1, results
    assert isinstance(losers[0], Conflict), losers[0]
    assert losers[0].slug == "request-changed"
    assert f"now {winners[0].status!r}" in losers[0].detail
    stored = await run(database, clock, lambda service: service.get(created.id))
    assert (stored.status, stored.version) == (winners[0].status, 2)
    assert [step.to_status for step in stored.history] == ["received", winners[0].status]


async def test_of_two_simultaneous_extensions_exactly_one_wins(
    database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = await create(database, clock)
    results = await race(
        database,
        clock,
        monkeypatch,
        lambda service: service.extend(created.id, ExtendRequest(months=1, reason="busy", actor="dpo:anna")),
        lambda service: service.extend(created.id, ExtendRequest(months=2, reason="complex", actor="dpo:bo")),
    )
    winners = [result for result in results if isinstance(result, RequestOut)]
    assert len(winners) == 1, results
    assert sum(isinstance(result, Conflict) for result in results) == 1, results
    stored = await run(database, clock, lambda service: service.get(created.id))
    assert stored.extension == winners[0].extension
    assert [step.action for step in stored.history] == ["received", "extension"]
