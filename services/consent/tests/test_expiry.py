"""Lapsed consents get an ``expired`` event in the ledger, once, whoever sweeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.consent.expiry import sweep_once
from services.consent.tests.support import KEYS, POLICY, PROFILED, SMS, consent_service, record, verify
from tillit.db import Database

pytestmark = pytest.mark.anyio


async def test_a_lapsed_consent_is_recorded_as_expired_once(database: Database) -> None:
    thirteen_months_ago = datetime.now(UTC) - timedelta(days=400)
    await record(database, "astrid", collected_at=thirteen_months_ago)
    await record(database, "lars", collected_at=thirteen_months_ago)
    await record(database, "lars", SMS)

    assert await sweep_once(database, POLICY, KEYS) == 2
    assert await sweep_once(database, POLICY, KEYS) == 0

    async with consent_service(database) as service:
        history = await service.history("astrid")
        lars = {state.purpose: state for state in (await service.current("lars")).consents}
    expired = history.events[-1]
    assert (expired.action, expired.source) == ("expired", "expiry")
    assert expired.collected_at == thirteen_months_ago + timedelta(days=365)
    assert (lars[PROFILED].status, lars[PROFILED].active) == ("expired", False)
    assert lars[SMS].status == "given"
    assert (await verify(database)).ok


async def test_a_consent_renewed_meanwhile_is_not_expired(database: Database) -> None:
    await record(database, "astrid", collected_at=datetime.now(UTC) - timedelta(days=400))
    async with consent_service(database) as service:
        lapsed = await service.lapsed()
    await record(database, "astrid")
    async with consent_service(database) as service:
        assert await service.expire(*lapsed[0]) is None
        assert (await service.current("astrid")).consents[0].status == "given"


async def test_two_sweepers_at_once_record_each_expiry_once(database: Database) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=400)
    for subject in ("astrid", "lars", "kadri", "mia"):
        await record(database, subject, collected_at=long_ago)
    counts = await asyncio.gather(sweep_once(database, POLICY, KEYS), sweep_once(database, POLICY, KEYS))
    assert sum(counts) == 4
    report = await verify(database)
    assert (report.ok, report.events) == (True, 8)
