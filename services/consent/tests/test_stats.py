"""Counts of subjects whose consent counts now, per purpose (what ``tillit policy diff`` reports)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.consent.tests.support import PROFILED, SMS, consent_service, record
from tillit.db import Database
from tillit.types import utcnow

pytestmark = pytest.mark.anyio


async def test_only_given_unexpired_consents_count(database: Database) -> None:
    await record(database, "s-given", PROFILED)
    await record(database, "s-also", PROFILED)
    await record(database, "s-also", SMS)
    await record(database, "s-withdrawn", PROFILED)
    await record(database, "s-withdrawn", PROFILED, "withdraw")
    await record(database, "s-refused", PROFILED, "refuse")
    await record(database, "s-expired", PROFILED, now=utcnow() - timedelta(days=800))
    async with consent_service(database) as service:
        stats = await service.stats()
    assert stats.active[PROFILED] == 2
    assert stats.active[SMS] == 1
    assert stats.active["marketing.communications.email"] == 0
    assert "essential.service.notifications.email" not in stats.active, "not a consent purpose"
