"""The release audit as compliance reads it: filtered, in stable order, paged by keyset; refusals kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect as sa_inspect

from gateway.audit import AuditService, decode_cursor, encode_cursor
from gateway.models import ReleaseRecord
from gateway.oauth import Caller
from gateway.repository import ReleaseAuditRepository
from gateway.schemas import AuditPage
from gateway.service import GatewayService
from gateway.upstream import Upstream
from tillit.db import Database
from tillit.keys import SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
from tillit.policy import load_policy
from tillit.problems import Forbidden, TillitError
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import REPO_ROOT, load_settings

pytestmark = pytest.mark.anyio

POLICY = load_policy(REPO_ROOT / "policies")
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
EMAIL = "marketing.communications.email"


def record(subject: str, channel: str, at: datetime, **overrides: object) -> ReleaseRecord:
    values: dict[str, object] = {
        "release_id": str(uuid.uuid4()),
        "client_id": f"{channel}-client",
        "channel": channel,
        "purpose": EMAIL,
        "subject_id": subject,
        "released": ["email", "first_name"],
        "withheld": [{"field": "phone", "reason": "category_not_permitted"}],
        "consent_event_id": "event-1",
        "released_at": at,
    }
    values.update(overrides)
    return ReleaseRecord(**values)  # type: ignore[arg-type]


async def store(database: Database, *records: ReleaseRecord) -> None:
    async with database.sessionmaker() as session, session.begin():
        repository = ReleaseAuditRepository(session)
        for item in records:
            await repository.record(item)


async def page(database: Database, **query: Any) -> AuditPage:
    async with database.sessionmaker() as session:
        return await AuditService(ReleaseAuditRepository(session)).releases(**query)


async def test_pages_follow_time_then_id_and_every_row_comes_exactly_once(database: Database) -> None:
    # Several rows share one timestamp: the id breaks the tie, so no row is skipped or repeated.
    rows = [record("astrid", "email", T0 + timedelta(seconds=i // 3)) for i in range(10)]
    rows.append(record("lars", "email", T0))
    rows.append(record("astrid", "sms", T0, purpose="marketing.communications.sms"))
    await store(database, *reversed(rows))

    seen: list[str] = []
    after = None
    pages = 0
    while True:
        result = await page(database, subject_id="astrid", channel="email", after=after, limit=4)
        seen += [item.release_id for item in result.items]
        pages += 1
        after = result.next_cursor
        if after is None:
            break
    expected = [r.release_id for r in sorted(rows[:10], key=lambda r: (r.released_at, r.release_id))]
    assert seen == expected
    assert pages == 3

    by_subject = await page(database, subject_id="astrid")
    assert [item.channel for item in by_subject.items].count("sms") == 1
    by_channel = await page(database, channel="email", limit=500)
    assert len(by_channel.items) == 11
    first = by_channel.items[0]
    assert first.outcome == "released"
    assert first.client_id == "email-client"
    assert first.released == ["email", "first_name"]
    assert [(w.field, w.reason) for w in first.withheld] == [("phone", "category_not_permitted")]
    assert first.consent_event_ids == ["event-1"]
    assert first.at == T0


async def test_rows_appended_while_paging_appear_later_never_earlier(database: Database) -> None:
    await store(database, *(record("astrid", "email", T0 + timedelta(seconds=i)) for i in range(4)))
    first = await page(database, subject_id="astrid", limit=2)
    await store(database, record("astrid", "email", T0 + timedelta(hours=1)))
    second = await page(database, subject_id="astrid", limit=2, after=first.next_cursor)
    third = await page(database, subject_id="astrid", limit=2, after=second.next_cursor)
    assert [item.at for item in second.items] == [T0 + timedelta(seconds=2), T0 + timedelta(seconds=3)]
    assert [item.at for item in third.items] == [T0 + timedelta(hours=1)]
    assert third.next_cursor is None


@pytest.mark.parametrize(
    ("query", "slug"),
    [({}, "audit-filter-required"), ({"channel": "email", "after": "bm90LWEtY3Vyc29y"}, "invalid-cursor")],
)
async def test_a_query_without_filter_or_with_a_forged_cursor_is_refused(
    database: Database, query: dict[str, str], slug: str
) -> None:
    with pytest.raises(TillitError) as refused:
        await page(database, **query)
    assert refused.value.status_code == 422
    assert refused.value.slug == slug


def test_cursors_round_trip_to_the_microsecond() -> None:
    row = record("astrid", "email", T0 + timedelta(microseconds=123457))
    assert decode_cursor(encode_cursor(row)) == (row.released_at, row.release_id)


async def test_a_refused_purpose_is_audited_although_the_request_rolls_back(database: Database, tmp_path: Path) -> None:
    settings = load_settings("gateway", {"TILLIT_DATA_DIR": str(tmp_path)})
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    upstream = Upstream(settings, ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY)))
    caller = Caller(client_id="sms-1", channel="sms", scopes=frozenset({"profiles:read"}))
    try:
        async with database.sessionmaker() as session:
            service = GatewayService(POLICY, upstream, ReleaseAuditRepository(session), clock=lambda: T0)
            with pytest.raises(Forbidden):
                await service.release_profile(caller, "astrid", EMAIL)
            await session.rollback()  # what provide_session does when the handler raises
    finally:
        await upstream.close()
    result = await page(database, subject_id="astrid")
    [refused] = result.items
    assert (refused.outcome, refused.channel, refused.client_id, refused.purpose) == ("refused", "sms", "sms-1", EMAIL)
    assert refused.released == []
    assert refused.withheld == []
    assert refused.consent_event_ids == []


async def test_a_release_without_a_request_session_still_commits_its_row(database: Database) -> None:
    # The single release opens no request session (gateway.api.release_profile): without a writer,
    # its row commits in a transaction of its own before record() returns.
    audit = ReleaseAuditRepository(None, bind=database.engine)
    with pytest.raises(RuntimeError):
        audit.session  # noqa: B018 - the property refuses to hand out a session it does not have
    held = record("astrid", "email", T0)
    await audit.record(held)
    await audit.record_apart(record("astrid", "email", T0 + timedelta(seconds=1), outcome="refused"))
    rows = (await page(database, subject_id="astrid", limit=10)).items
    assert [(row.release_id == held.release_id, row.outcome) for row in rows] == [
        (True, "released"),
        (False, "refused"),
    ]
    with pytest.raises(ValueError, match="a session or an engine"):
        ReleaseAuditRepository(None)


async def test_the_release_audit_keeps_only_the_indexes_its_queries_use(database: Database) -> None:
    # Each index is one more insert per release; subject lookups go through the (subject, time, id) one.
    def index_names(connection: Any) -> set[str]:
        return {index["name"] for index in sa_inspect(connection).get_indexes("release_record")}

    async with database.engine.connect() as connection:
        names = await connection.run_sync(index_names)
    assert names == {"ix_release_record_channel_time", "ix_release_record_subject_time"}
