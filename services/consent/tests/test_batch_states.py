"""The batch state read the gateway's releases use answers exactly as the single subject's read does."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.consent.repository import StateRow
from services.consent.schemas import ConfirmConsent
from services.consent.service import BatchedStateReads, read_purpose_states
from services.consent.tests.support import POLICY, PROFILED, consent_service, record
from tillit.db import Database
from tillit.policy import Policy
from tillit.problems import Unavailable, Unprocessable

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


SUBJECTS = ["confirmed", "given", "lapsed", "nobody", "pending", "refused", "stale", "withdrawn"]
"""One subject per kind of state (``nobody`` has none), as :func:`seed_every_kind` records them."""


async def seed_every_kind(database: Database, policy: Policy) -> None:
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


async def test_every_kind_of_state_reads_the_same_in_a_batch_as_alone(database: Database) -> None:
    policy = _material_change()
    await seed_every_kind(database, policy)
    subjects = SUBJECTS
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


async def test_the_bare_purpose_state_read_answers_as_the_service_does(database: Database) -> None:
    """On PostgreSQL the gateway's batches are read without a session (``read_purpose_states``): every
    kind of state derived the same, encoded to the same bytes; an unknown purpose the same 422."""
    if database.is_sqlite:
        pytest.skip("the bare batch read is PostgreSQL's (SQLite reads through the session)")
    policy = _material_change()
    await seed_every_kind(database, policy)
    for purpose in (PROFILED, EMAIL):
        for subjects in (SUBJECTS, ["given", "given", "nobody"], []):
            async with consent_service(database, policy, lambda: NOW) as service:
                expected = await service.purpose_states(purpose, subjects)
            bare = await read_purpose_states(database, policy, purpose, subjects, clock=lambda: NOW)
            assert bare == expected
            assert msgspec.json.encode(bare) == msgspec.json.encode(expected)
    with pytest.raises(Unprocessable, match=r"no\.such\.purpose"):
        await read_purpose_states(database, policy, "no.such.purpose", ["given"])


async def test_batched_current_state_reads_answer_as_the_single_read_and_see_every_acknowledged_write(
    database: Database,
) -> None:
    """The consent service's batched GET /v1/subjects/{id}/consents (PostgreSQL): concurrent reads of
    every kind of state share statements yet answer as ``current`` does; a withdrawal acknowledged
    before a read began is in it; a failed batch answers 503 to every read in it, nothing else."""
    if database.is_sqlite:
        pytest.skip("batched reads are PostgreSQL's (SQLite reads each subject alone)")
    policy = _material_change()
    await seed_every_kind(database, policy)
    at = {"policy": policy, "now": NOW}
    subjects = SUBJECTS * 15
    reads = BatchedStateReads(database, clock=lambda: NOW)
    fetched: list[int] = []
    fetch = reads._fetch

    async def counting(keys: list[str]) -> dict[str, list[StateRow]]:
        fetched.append(len(keys))
        return await fetch(keys)

    reads._batcher._fetch = counting  # type: ignore[method-assign]
    try:
        batched = await asyncio.gather(*(reads.current(subject, policy) for subject in subjects))
        assert len(fetched) < len(subjects) / 10, fetched  # shared statements, each key once per batch
        async with consent_service(database, policy, lambda: NOW) as service:
            alone = {subject: await service.current(subject) for subject in set(subjects)}
        for subject, answer in zip(subjects, batched, strict=True):
            assert answer == alone[subject]
        assert [state.status for state in alone["lapsed"].consents] == ["expired"]
        assert alone["nobody"].consents == []

        for turn in range(20):
            reading = [asyncio.ensure_future(reads.current("given", policy)) for _ in range(5)]
            action = "withdraw" if turn % 2 == 0 else "give"
            await record(database, "given", action=action, notice_version=2, **at)
            after = await asyncio.gather(*(reads.current("given", policy) for _ in range(5)))
            assert {state.consents[0].status for state in after} == {"withdrawn" if action == "withdraw" else "given"}
            await asyncio.gather(*reading)

        async def broken(keys: list[str]) -> dict[str, list[StateRow]]:
            raise ConnectionResetError("the database went away")

        reads._batcher._fetch = broken  # type: ignore[method-assign]
        failed = await asyncio.gather(*(reads.current(s, policy) for s in subjects[:6]), return_exceptions=True)
        assert all(isinstance(error, Unavailable) and error.status_code == 503 for error in failed), failed
    finally:
        await reads.close()
