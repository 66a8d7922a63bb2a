"""Bulk import (all rows or none, re-runs change nothing) and Idempotency-Key replays."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from services.consent.schemas import ImportBatch, RecordConsent, RecordedConsent
from services.consent.tests.support import PROFILED, SMS, consent_service, verify
from tillit.app import decode_strictly
from tillit.db import Database
from tillit.problems import Unprocessable
from tillit.types import UnrepresentableTime

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"
CSV = """subject_id,purpose,action,collected_at,notice_version,language,ip
astrid,marketing.communications.email,give,2026-02-01T10:00:00Z,1,sv,192.0.2.77
astrid,marketing.communications.email,withdraw,2026-03-01T10:00:00Z,,,
lars,marketing.communications.sms,give,2026-02-15T08:30:00+01:00,,nb,
"""


async def run_import(database: Database, content: str, kind: str = "csv") -> object:
    async with consent_service(database) as service:
        return await service.import_batch(ImportBatch(format=kind, content=content))  # type: ignore[arg-type]


async def test_a_csv_batch_is_imported_and_derives_state(database: Database) -> None:
    result = await run_import(database, CSV)
    assert (result.rows, result.recorded, result.already_imported) == (3, 3, 0)  # type: ignore[attr-defined]
    async with consent_service(database) as service:
        astrid = await service.history("astrid")
        states = {state.purpose: state.status for state in (await service.current("astrid")).consents}
        lars = (await service.current("lars")).consents[0]
    assert [(event.action, event.source) for event in astrid.events] == [("given", "import"), ("withdrawn", "import")]
    assert astrid.events[0].evidence.ip == "192.0.2.0"
    assert astrid.events[0].evidence.language == "sv"
    assert states[EMAIL] == "withdrawn"
    assert (lars.purpose, lars.status) == (SMS, "given")
    assert (await verify(database)).ok


async def test_running_the_same_batch_again_changes_nothing(database: Database) -> None:
    await run_import(database, CSV)
    again = await run_import(database, CSV)
    assert (again.recorded, again.already_imported) == (0, 3)  # type: ignore[attr-defined]
    assert (await verify(database)).events == 3


async def test_ndjson_is_accepted_too(database: Database) -> None:
    lines = [
        {"subject_id": "mia", "purpose": PROFILED, "action": "give", "collected_at": "2026-04-01T12:00:00Z"},
        {"subject_id": "mia", "purpose": SMS, "action": "refuse", "collected_at": "2026-04-01T12:00:00Z"},
    ]
    result = await run_import(database, "\n".join(json.dumps(line) for line in lines) + "\n", "ndjson")
    assert result.recorded == 2  # type: ignore[attr-defined]


async def test_one_bad_row_refuses_the_batch_and_every_problem_is_listed_by_line(database: Database) -> None:
    bad = CSV + (
        "kadri,no.such.purpose,give,2026-02-01T10:00:00Z,,,\n"
        "kadri,marketing.communications.sms,maybe,2026-02-01T10:00:00Z,,,\n"
        "kadri,marketing.communications.sms,give,2026-02-01T10:00:00,,,\n"
        "kadri,marketing.communications.sms,give,2099-01-01T00:00:00Z,,,\n"
        "kadri,marketing.communications.sms,give,2026-02-01T10:00:00Z,9,,\n"
        "kadri,marketing.communications.sms,give,2026-02-01T10:00:00Z,,,not-an-ip\n"
    )
    with pytest.raises(Unprocessable) as refused:
        await run_import(database, bad)
    problems = {error["line"]: error["problem"] for error in refused.value.errors or []}
    assert sorted(problems) == [5, 6, 7, 8, 9, 10]
    assert "no.such.purpose" in problems[5]
    assert "action" in problems[6]
    assert "time zone" in problems[7] or "timezone" in problems[7]
    assert "future" in problems[8]
    assert "notice version 9" in problems[9]
    assert "ip" in problems[10]
    assert (await verify(database)).events == 0


async def test_unreadable_csv_and_times_outside_the_calendar_in_utc_are_row_problems(database: Database) -> None:
    """Found by schemathesis: a bare carriage return in a field was a 500, a year-1 time east of UTC too."""
    with pytest.raises(Unprocessable) as unreadable:
        await run_import(database, CSV + "kadri\r!,x\n")
    assert [error["line"] for error in unreadable.value.errors or []] == [5]
    assert "not valid CSV" in (unreadable.value.errors or [])[0]["problem"]

    edge = CSV + "kadri,marketing.communications.sms,give,0001-01-01T00:00:00+00:38,,,\n"
    with pytest.raises(Unprocessable) as outside:
        await run_import(database, edge)
    problems = {error["line"]: error["problem"] for error in outside.value.errors or []}
    assert list(problems) == [5]
    assert "outside the years 1-9999" in problems[5]
    assert (await verify(database)).events == 0


async def test_a_time_outside_the_calendar_in_utc_is_unprocessable_not_an_overflow() -> None:
    """Schema-valid (schemathesis sent ``+00:04``), so a 422 by the project's convention, never a 400."""
    body = {"purpose": PROFILED, "action": "give", "source": "import", "collected_at": "0001-01-01T00:00:00+00:38"}
    with pytest.raises(UnrepresentableTime, match="outside the years 1-9999") as refused:
        msgspec.json.decode(json.dumps(body), type=RecordConsent)
    assert refused.value.status_code == 422
    with pytest.raises(UnrepresentableTime):
        decode_strictly(json.dumps(body).encode(), RecordConsent)


async def test_an_empty_batch_is_refused(database: Database) -> None:
    with pytest.raises(Unprocessable, match="no rows"):
        await run_import(database, "subject_id,purpose,action,collected_at\n")


async def idempotent_give(database: Database, key: str, fingerprint: str, subject: str = "astrid") -> RecordedConsent:
    async with consent_service(database) as service:
        command = RecordConsent(purpose=PROFILED, action="give", source="preference_page")
        return await service.once(key, fingerprint, lambda: service.record(subject, command), RecordedConsent)


async def test_a_repeated_idempotency_key_answers_as_the_first_time(database: Database) -> None:
    first = await idempotent_give(database, "k-1", "same")
    second = await idempotent_give(database, "k-1", "same")
    assert second.event.id == first.event.id
    assert second.receipt == first.receipt
    assert (await verify(database)).events == 1


async def test_a_key_reused_for_another_request_is_refused(database: Database) -> None:
    await idempotent_give(database, "k-1", "one request")
    with pytest.raises(Unprocessable, match="already used for a different request"):
        await idempotent_give(database, "k-1", "another request", subject="lars")
    assert (await verify(database)).events == 1


async def test_concurrent_requests_with_one_key_write_once(database: Database) -> None:
    answers = await asyncio.gather(*(idempotent_give(database, "k-race", "same") for _ in range(6)))
    assert len({answer.event.id for answer in answers}) == 1
    assert (await verify(database)).events == 1
