"""The batch state read the gateway's releases use answers exactly as the single subject's read does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.consent.schemas import ConfirmConsent
from services.consent.tests.support import POLICY, PROFILED, consent_service, record
from tillit.db import Database
from tillit.policy import Policy

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"  # double opt-in
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _material_change() -> Policy:
    """The shipped policy plus a material version 2 of the personalisation notice, in effect at NOW."""
    notices = dict(POLICY.notices)
    first = notices[PROFILED][0]
    material = msgspec.structs.replace(first, version=2, material=True, effective=NOW - timedelta(days=30))
    notices[PROFILED] = [first, material]
    return msgspec.structs.replace(POLICY, notices=notices)


async def test_every_kind_of_state_reads_the_same_in_a_batch_as_alone(database: Database) -> None:
    policy = _material_change()
    before = NOW - timedelta(days=60)
    at = {"policy": policy, "now": NOW}
    await record(database, "given", notice_version=2, **at)
    await record(database, "stale", notice_version=1, collected_at=before, policy=policy, now=before)
    await record(database, "withdrawn", **at)
    await record(database, "withdrawn", action="withdraw", **at)
    await record(database, "refused", action="refuse", **at)
    await record(database, "lapsed", collected_at=NOW - timedelta(days=800), policy=policy, now=before)
    pending = await record(database, "pending", EMAIL, **at)
    confirmed = await record(database, "confirmed", EMAIL, **at)
    assert confirmed.confirmation is not None
    async with consent_service(database, policy, lambda: NOW) as service:
        await service.confirm(ConfirmConsent(token=confirmed.confirmation.token))
    assert pending.state.status == "pending"

    subjects = ["confirmed", "given", "lapsed", "nobody", "pending", "refused", "stale", "withdrawn"]
    for purpose in (PROFILED, EMAIL):
        async with consent_service(database, policy, lambda: NOW) as service:
            batch = (await service.purpose_states(purpose, subjects)).states
            alone = {}
            for subject in subjects:
                for state in (await service.current(subject)).consents:
                    if state.purpose == purpose:
                        alone[subject] = msgspec.structs.asdict(state)
        assert {state.subject_id: state for state in batch}.keys() == alone.keys()
        for state in batch:
            as_read = msgspec.structs.asdict(state)
            del as_read["subject_id"]
            assert as_read == alone[state.subject_id]

    async with consent_service(database, policy, lambda: NOW) as service:
        kinds = {
            purpose: {
                s.subject_id: (s.status, s.active, s.needs_reconsent)
                for s in (await service.purpose_states(purpose, subjects)).states
            }
            for purpose in (PROFILED, EMAIL)
        }
    assert kinds[PROFILED] == {
        "given": ("given", True, False),
        "stale": ("given", False, True),
        "withdrawn": ("withdrawn", False, False),
        "refused": ("refused", False, False),
        "lapsed": ("expired", False, False),
    }
    assert kinds[EMAIL] == {"pending": ("pending", False, False), "confirmed": ("given", True, False)}
