"""The audience queries: who counts for a purpose now, page by page, and many subjects' states at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.consent.schemas import RecordConsent, SubjectConsents
from services.consent.tests.support import POLICY, PROFILED, SMS, consent_service, record
from tillit.db import Database
from tillit.policy import Policy
from tillit.problems import Unprocessable

pytestmark = pytest.mark.anyio


async def _everyone(database: Database, purpose: str = PROFILED, page: int = 2, policy: Policy = POLICY) -> list[str]:
    subjects: list[str] = []
    after = ""
    while True:
        async with consent_service(database, policy) as service:
            rows = (await service.active(purpose, after, page)).consents
        subjects += [row.subject_id for row in rows]
        if len(rows) < page:
            return subjects
        after = rows[-1].subject_id


async def test_only_consents_that_count_now_are_listed_in_subject_order(database: Database) -> None:
    for subject in ("s05", "s01", "s04", "s02", "s07"):
        await record(database, subject)
    await record(database, "s03", action="refuse")
    await record(database, "s04", action="withdraw")
    await record(database, "s06", collected_at=datetime.now(UTC) - timedelta(days=400))  # lapsed, not swept yet
    await record(database, "s08", SMS)  # another purpose

    assert await _everyone(database) == ["s01", "s02", "s05", "s07"]
    assert await _everyone(database, page=100) == ["s01", "s02", "s05", "s07"]
    assert await _everyone(database, SMS) == ["s08"]
    async with consent_service(database) as service:
        page = await service.active(PROFILED, "s02", 1)
    row = page.consents[0]
    current = {state.purpose: state for state in (await _current(database, "s05")).consents}[PROFILED]
    assert (row.subject_id, row.event_id, row.expires_at) == ("s05", current.event_id, current.expires_at)


async def test_a_material_notice_change_takes_old_consents_out_of_the_audience(database: Database) -> None:
    await record(database, "s01", notice_version=1)
    await record(database, "s02", notice_version=1)
    notices = dict(POLICY.notices)
    first = notices[PROFILED][0]
    material = msgspec.structs.replace(first, version=2, material=True, effective=datetime(2026, 2, 1, tzinfo=UTC))
    notices[PROFILED] = [first, material]
    changed = msgspec.structs.replace(POLICY, notices=notices)

    async with consent_service(database, changed) as service:
        await service.record("s02", _give(notice_version=2))
    assert await _everyone(database, policy=changed) == ["s02"]


async def test_states_of_many_subjects_for_one_purpose(database: Database) -> None:
    await record(database, "s01")
    await record(database, "s02")
    await record(database, "s02", action="withdraw")
    await record(database, "s03", SMS)
    async with consent_service(database) as service:
        states = (await service.purpose_states(PROFILED, ["s01", "s02", "s03", "nobody"])).states
        with pytest.raises(Unprocessable):
            await service.active("no.such.purpose", "", 10)
    assert [(s.subject_id, s.status, s.active) for s in states] == [("s01", "given", True), ("s02", "withdrawn", False)]


async def _current(database: Database, subject: str) -> SubjectConsents:
    async with consent_service(database) as service:
        return await service.current(subject)


def _give(**extra: object) -> RecordConsent:
    return RecordConsent(purpose=PROFILED, action="give", source="preference_page", **extra)  # type: ignore[arg-type]
