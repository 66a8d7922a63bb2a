"""Audience exports end to end: who is listed, with which fields, resumption, audit, failure."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.platform import RunningPlatform
from tests.test_release_e2e import ASTRID, EMAIL, assert_problem
from tillit.db import Database

pytestmark = pytest.mark.slow

ADS = "marketing.advertising.third_party.targeted"
NOTIFICATIONS = "essential.service.notifications.email"
NDJSON = "application/x-ndjson"


def audience(stack: RunningPlatform, purpose: str, channel: str = "email", **params: Any) -> httpx.Response:
    params.setdefault("format", "ndjson")
    return httpx.get(f"{stack.gateway}/v1/audiences/{purpose}", params=params, headers=stack.auth(channel), timeout=30)


def lines(response: httpx.Response) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The subject lines and the last line (``end`` or ``error``) of an audience answer."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(NDJSON)
    parsed = [json.loads(line) for line in response.text.splitlines()]
    assert parsed, "an audience always ends with an end or error line"
    *members, last = parsed
    assert all("subject_id" in member for member in members)
    return members, last


def members_by_subject(response: httpx.Response) -> dict[str, dict[str, Any]]:
    members, last = lines(response)
    assert last["end"]["complete"] is True, last
    assert last["end"]["subjects"] == len(members)
    assert len({m["subject_id"] for m in members}) == len(members), "no subject twice"
    return {member["subject_id"]: member for member in members}


def give_long_ago(stack: RunningPlatform, subject: str, purpose: str, days: int) -> None:
    collected_at = (datetime.now(UTC) - timedelta(days=days)).isoformat()
    httpx.post(
        f"{stack.url('consent')}/v1/subjects/{subject}/events",
        json={"purpose": purpose, "action": "give", "source": "import", "collected_at": collected_at},
        headers=stack.service_headers("consent"),
    ).raise_for_status()


def audit_rows(stack: RunningPlatform, release_id: str) -> tuple[Any, list[Any]]:
    gateway = stack.platform.settings["gateway"]

    async def read() -> tuple[Any, list[Any]]:
        database = Database(gateway.database_url, gateway.database_schema)
        try:
            async with database.engine.connect() as conn:
                export = (
                    await conn.execute(
                        text("SELECT channel, purpose, segment FROM audience_release WHERE release_id = :id"),
                        {"id": release_id},
                    )
                ).one()
                rows = await conn.execute(
                    text(
                        "SELECT subject_id, released, withheld, consent_event_id FROM audience_release_subject "
                        "WHERE release_id = :id ORDER BY subject_id"
                    ),
                    {"id": release_id},
                )
                return export, list(rows)
        finally:
            await database.dispose()

    return asyncio.run(read())


def _json(value: Any) -> Any:
    return value if isinstance(value, list) else json.loads(value)


@pytest.fixture(scope="module")
def shoppers(stack: RunningPlatform) -> dict[str, str]:
    """Shoppers in every consent situation (module-scoped: one set per platform)."""
    both = ((EMAIL, "give"), (ADS, "give"))
    made = {
        "consented": stack.new_shopper(ASTRID, consents=both),
        "consented_too": stack.new_shopper({**ASTRID, "first_name": "Berit"}, consents=((EMAIL, "give"),)),
        "withdrawn": stack.new_shopper(ASTRID, consents=((EMAIL, "give"), (EMAIL, "withdraw"))),
        "refused": stack.new_shopper(ASTRID, consents=((EMAIL, "refuse"),)),
        "never": stack.new_shopper(ASTRID),
        "expired": stack.new_shopper(ASTRID),
        "only_phone": stack.new_shopper({"phone": "+46701234567"}, consents=((EMAIL, "give"),)),
    }
    give_long_ago(stack, made["expired"], EMAIL, days=3 * 365)
    return made


def test_only_consented_subjects_are_listed_with_only_their_releasable_fields(
    stack: RunningPlatform, shoppers: dict[str, str]
) -> None:
    response = audience(stack, EMAIL)
    assert response.headers["cache-control"] == "no-store"
    listed = members_by_subject(response)
    assert shoppers["consented"] in listed
    assert shoppers["consented_too"] in listed
    for absent in ("withdrawn", "refused", "never", "expired", "only_phone"):
        assert shoppers[absent] not in listed, absent
    astrid = listed[shoppers["consented"]]
    assert astrid["fields"] == {
        "email": "astrid@example.com",
        "favourite_brands": ["Filippa K"],
        "first_name": "Astrid",
        "shoe_size": 38,
    }
    assert astrid["withheld"] == {"phone": "category_not_permitted"}
    assert "+46701234567" not in response.text


def test_ads_gets_only_the_email_of_those_who_consented_to_ads(
    stack: RunningPlatform, shoppers: dict[str, str]
) -> None:
    response = audience(stack, ADS, channel="ads")
    listed = members_by_subject(response)
    assert shoppers["consented"] in listed
    assert shoppers["consented_too"] not in listed
    # Customer match on the hashed e-mail only, as the ads channel's policy says (never the address).
    astrid = listed[shoppers["consented"]]
    assert astrid["fields"] == {"email": hashlib.sha256(b"astrid@example.com").hexdigest()}
    assert astrid["transformed"] == {"email": "sha256_email"}
    assert "astrid@example.com" not in response.text
    assert_problem(audience(stack, EMAIL, channel="ads"), 403, "purpose-not-registered")


def test_a_contract_purpose_lists_every_profile_holder(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    listed = members_by_subject(audience(stack, NOTIFICATIONS))
    for name in ("consented", "withdrawn", "never", "expired"):
        assert listed[shoppers[name]]["fields"] == {"email": "astrid@example.com", "first_name": "Astrid"}
    assert shoppers["only_phone"] not in listed  # nothing releasable: not listed at all


def test_resuming_from_any_cursor_yields_exactly_the_rest(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    for _ in range(4):
        stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    everyone, _ = lines(audience(stack, EMAIL))
    assert len(everyone) >= 6
    for cut in (0, 2, len(everyone) - 2):
        rest, last = lines(audience(stack, EMAIL, cursor=everyone[cut]["cursor"]))
        assert [m["subject_id"] for m in rest] == [m["subject_id"] for m in everyone[cut + 1 :]]
        assert last["end"]["complete"] is True
    resumed: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page, last = lines(audience(stack, EMAIL, **params))
        resumed += [m["subject_id"] for m in page]
        if last["end"]["complete"]:
            break
        assert len(page) == 2
        cursor = last["end"]["cursor"]
    assert resumed == [m["subject_id"] for m in everyone], "no gaps, no duplicates"


def test_every_listed_subject_is_audited(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    response = audience(stack, EMAIL)
    members, last = lines(response)
    release_id = last["end"]["release_id"]
    assert response.headers["tillit-release-id"] == release_id
    export, rows = audit_rows(stack, release_id)
    assert (export.channel, export.purpose, export.segment) == ("email", EMAIL, None)
    assert sorted(row.subject_id for row in rows) == sorted(m["subject_id"] for m in members)
    astrid = next(row for row in rows if row.subject_id == shoppers["consented"])
    assert _json(astrid.released) == ["email", "favourite_brands", "first_name", "shoe_size"]
    assert _json(astrid.withheld) == [{"field": "phone", "reason": "category_not_permitted"}]
    state = httpx.get(
        f"{stack.url('consent')}/v1/subjects/{shoppers['consented']}/consents",
        headers=stack.service_headers("consent"),
    ).json()["consents"]
    assert astrid.consent_event_id == next(s["event_id"] for s in state if s["purpose"] == EMAIL)


def test_a_segment_narrows_the_audience(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    key = f"berit-{stack.backend}"
    httpx.post(
        f"{stack.url('rules')}/v1/segments",
        json={
            "key": key,
            "title": "Berits",
            "purpose": EMAIL,
            "conditions": [{"field": "first_name", "op": "eq", "value": "Berit"}],
        },
        headers=stack.service_headers("rules"),
    ).raise_for_status()
    listed = members_by_subject(audience(stack, EMAIL, segment=key))
    assert shoppers["consented_too"] in listed
    assert all(member["fields"]["first_name"] == "Berit" for member in listed.values())
    assert_problem(audience(stack, EMAIL, segment="no-such-segment"), 422, "unknown-segment")
    whole, _ = lines(audience(stack, EMAIL))
    tampered_elsewhere = whole[0]["cursor"]
    assert_problem(audience(stack, EMAIL, segment=key, cursor=tampered_elsewhere), 422, "invalid-cursor")


def test_bad_requests_are_refused_with_problem_details(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    assert_problem(audience(stack, EMAIL, format="csv"), 400)
    missing_format = httpx.get(f"{stack.gateway}/v1/audiences/{EMAIL}", headers=stack.auth("email"))
    assert_problem(missing_format, 400)
    assert_problem(audience(stack, "no.such.purpose"), 422, "unknown-purpose")
    assert_problem(audience(stack, EMAIL, cursor="not-a-cursor"), 400)
    members, _ = lines(audience(stack, EMAIL))
    encoded, mac = members[0]["cursor"].split(".")
    forged = f"{encoded[:-2]}{'AA' if encoded[-2:] != 'AA' else 'BB'}.{mac}"
    assert_problem(audience(stack, EMAIL, cursor=forged), 422, "invalid-cursor")
    assert_problem(audience(stack, NOTIFICATIONS, cursor=members[0]["cursor"]), 422, "invalid-cursor")
    no_scope = httpx.get(
        f"{stack.gateway}/v1/audiences/{EMAIL}", params={"format": "ndjson"}, headers=stack.auth("sms")
    )
    assert_problem(no_scope, 403, "insufficient-scope")
    assert_problem(httpx.get(f"{stack.gateway}/v1/audiences/{EMAIL}", params={"format": "ndjson"}), 401)


def test_consent_service_down_means_503_and_no_data(stack: RunningPlatform, shoppers: dict[str, str]) -> None:
    stack.platform.stop_one("consent")
    try:
        response = audience(stack, EMAIL)
        body = assert_problem(response, 503, "consent-unavailable")
        assert "subject_id" not in body
        assert "astrid@example.com" not in response.text
    finally:
        stack.platform.start_one("consent")
        stack.platform.wait_ready(components=["consent"])
    assert shoppers["consented"] in members_by_subject(audience(stack, EMAIL))
