"""The audience audit written in bulk, and the cursors that resume an audience."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.app import MIGRATIONS
from gateway.audiences import CursorCodec
from gateway.models import AudienceRelease
from gateway.repository import AudienceAuditRepository
from tillit.db import Database
from tillit.problems import Unprocessable
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


async def test_pages_of_audit_rows_are_written_in_bulk_and_read_back(database: Database) -> None:
    release = AudienceRelease(
        release_id="r" * 36, client_id="c1", channel="email", purpose=EMAIL, segment=None, started_at=NOW
    )
    released = '["email","first_name"]'
    withheld = '[{"field":"phone","reason":"category_not_permitted"}]'
    async with database.sessionmaker() as session, session.begin():
        repository = AudienceAuditRepository(session)
        await repository.open(release)
        await repository.record_subjects(
            release.release_id, NOW, [(f"s{n:04}", released, withheld, f"e{n}") for n in range(1500)]
        )
    async with database.sessionmaker() as session, session.begin():
        await AudienceAuditRepository(session).record_subjects(release.release_id, NOW, [("s9999", "[]", "[]", None)])
        await AudienceAuditRepository(session).record_subjects(release.release_id, NOW, [])

    async with database.sessionmaker() as session:
        repository = AudienceAuditRepository(session)
        stored = await repository.release(release.release_id)
        rows = await repository.subjects(release.release_id)
    assert stored is not None
    assert (stored.channel, stored.purpose, stored.resumed_after) == ("email", EMAIL, None)
    assert len(rows) == 1501
    first = rows[0]
    assert (first["subject_id"], first["released"], first["consent_event_id"]) == (
        "s0000",
        ["email", "first_name"],
        "e0",
    )
    assert first["withheld"] == [{"field": "phone", "reason": "category_not_permitted"}]
    assert rows[-1]["consent_event_id"] is None


def test_a_cursor_resumes_only_the_audience_it_was_issued_for() -> None:
    codec = CursorCodec(b"k" * 32)
    cursor = codec.signer(EMAIL, None)("shopper-astrid")
    assert codec.subject_after(cursor, EMAIL, None) == "shopper-astrid"
    for purpose, segment in ((EMAIL, "jeans"), ("personalize.content.profiled", None)):
        with pytest.raises(Unprocessable):
            codec.subject_after(cursor, purpose, segment)
    encoded, mac = cursor.split(".")
    other = codec.signer(EMAIL, None)("shopper-lars").split(".")[0]
    for forged in (f"{other}.{mac}", f"{encoded}.{'A' * 22}", f"!!.{mac}", "."):
        with pytest.raises(Unprocessable):
            codec.subject_after(forged, EMAIL, None)
    with pytest.raises(Unprocessable):
        CursorCodec(b"x" * 32).subject_after(cursor, EMAIL, None)


def test_cursors_issued_with_the_earlier_hmac_still_resume_only_their_audience() -> None:
    """Streams under way when the cursor MAC moved to keyed BLAKE2b keep resuming; forgeries still fail."""
    key = b"k" * 32
    raw = b"shopper-astrid"
    mac = hmac.new(key, f"{EMAIL}\x00\x00".encode() + raw, hashlib.sha256).digest()[:16]
    legacy = (
        f"{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    )
    codec = CursorCodec(key)
    assert codec.signer(EMAIL, None)("shopper-astrid") != legacy
    assert codec.subject_after(legacy, EMAIL, None) == "shopper-astrid"
    with pytest.raises(Unprocessable):
        codec.subject_after(legacy, EMAIL, "jeans")
    with pytest.raises(Unprocessable):
        CursorCodec(b"x" * 32).subject_after(legacy, EMAIL, None)


def test_cursors_stay_the_same_bytes_from_one_gateway_version_to_the_next() -> None:
    """Cursors issued by an earlier gateway (and by other replicas) must keep resuming: pinned values."""
    codec = CursorCodec(bytes(range(32)))
    assert codec.signer(EMAIL, None)("shopper-astrid") == "c2hvcHBlci1hc3RyaWQ.QkEbQjCL-HhfBfRnQv5w7Q"
    sign = codec.signer(EMAIL, "denim_fans")
    assert [sign("shopper-lars"), sign("shopper-lars")] == ["c2hvcHBlci1sYXJz.MQxmUKCwQKfbgLVreWBFng"] * 2
