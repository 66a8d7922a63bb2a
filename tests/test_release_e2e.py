"""The thin path end to end, against real processes on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import text

from tests.platform import RunningPlatform
from tillit.db import Database

pytestmark = pytest.mark.slow

EMAIL = "marketing.communications.email"
ASTRID = {
    "email": "astrid@example.com",
    "first_name": "Astrid",
    "shoe_size": 38,
    "phone": "+46701234567",
    "favourite_brands": ["Filippa K"],
}


def profile(stack: RunningPlatform, subject_id: str, purpose: str | None = EMAIL, **kwargs: Any) -> httpx.Response:
    params = {"purpose": purpose} if purpose is not None else {}
    headers = kwargs.pop("headers", stack.auth("email"))
    return httpx.get(f"{stack.gateway}/v1/subjects/{subject_id}/profile", params=params, headers=headers, **kwargs)


def capture(stack: RunningPlatform, subject_id: str, request: dict[str, Any]) -> httpx.Response:
    """POST to the consent capture endpoint; ``request`` holds httpx's json/content/headers."""
    request = dict(request)
    headers = {**stack.auth("email"), **request.pop("headers", {})}
    return httpx.post(f"{stack.gateway}/v1/subjects/{subject_id}/consents", headers=headers, **request)


def consent_state(stack: RunningPlatform, subject_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.url('consent')}/v1/subjects/{subject_id}/consents", headers=stack.service_headers("consent")
    )
    response.raise_for_status()
    return response.json()["consents"]


def assert_problem(response: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if slug:
        assert body["type"] == f"urn:tillit:problem:{slug}"
    return body


def test_given_consent_releases_then_withdrawal_withholds_on_the_very_next_call(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID)

    before = profile(stack, subject)
    assert before.status_code == 200
    assert before.json()["fields"] == {}
    assert {w["reason"] for w in before.json()["withheld"]} >= {"no_consent"}

    given = capture(stack, subject, {"json": {"purpose": EMAIL, "action": "give", "evidence": {"ip": "203.0.113.9"}}})
    assert given.status_code == 201, given.text
    assert given.json()["event"]["source"] == f"channel:{stack.channels['email'].client_id}"
    assert given.json()["event"]["evidence"]["ip"] == "203.0.113.0"

    # E-mail marketing needs double opt-in: nothing is released until the shopper confirms.
    assert given.json()["state"]["status"] == "pending"
    pending = profile(stack, subject).json()
    assert pending["fields"] == {}
    assert {w["field"]: w["reason"] for w in pending["withheld"]}["email"] == "consent_pending"
    token = given.json()["confirmation"]["token"]
    confirmed = httpx.post(
        f"{stack.gateway}/v1/consents/confirmations", json={"token": token}, headers=stack.auth("email")
    )
    assert confirmed.status_code == 201, confirmed.text
    assert confirmed.json()["state"]["status"] == "given"
    again = httpx.post(f"{stack.gateway}/v1/consents/confirmations", json={"token": token}, headers=stack.auth("email"))
    assert_problem(again, 409, "confirmation-superseded")

    released = profile(stack, subject).json()
    assert released["fields"] == {
        "email": "astrid@example.com",
        "first_name": "Astrid",
        "shoe_size": 38,
        "favourite_brands": ["Filippa K"],
    }
    assert released["withheld"] == [{"field": "phone", "reason": "category_not_permitted"}]
    assert released["release_id"]

    withdrawn = capture(stack, subject, {"json": {"purpose": EMAIL, "action": "withdraw"}})
    assert withdrawn.status_code == 201

    after = profile(stack, subject)
    assert after.status_code == 200
    assert after.json()["fields"] == {}
    assert "astrid@example.com" not in after.text
    assert {w["field"]: w["reason"] for w in after.json()["withheld"]}["email"] == "consent_withdrawn"


def test_under_concurrent_releases_a_withdrawal_is_seen_by_the_very_next_call(stack: RunningPlatform) -> None:
    """Releases read consent in batches while others are in flight: a withdrawal is seen at once even
    with many releases of the same subject under way. (The exact check that a read never joins a batch
    already sent is gateway/tests/test_read_batch.py: here the window for that is too short to hit.)"""
    subject = stack.new_shopper(ASTRID)
    given = capture(stack, subject, {"json": {"purpose": EMAIL, "action": "give"}})
    token = given.json()["confirmation"]["token"]
    confirmations = f"{stack.gateway}/v1/consents/confirmations"
    confirm = httpx.post(confirmations, json={"token": token}, headers=stack.auth("email"))
    assert confirm.status_code == 201, confirm.text
    url = f"{stack.gateway}/v1/subjects/{subject}/profile"
    params = {"purpose": EMAIL}

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with httpx.AsyncClient(headers=stack.auth("email"), timeout=30) as client:
            stop = asyncio.Event()
            under_way = asyncio.Event()
            seen: list[dict[str, Any]] = []

            async def keep_releasing() -> None:
                while not stop.is_set():
                    response = await client.get(url, params=params)
                    assert response.status_code == 200, response.text
                    seen.append(response.json())
                    if len(seen) >= 24:
                        under_way.set()

            load = [asyncio.create_task(keep_releasing()) for _ in range(12)]
            await under_way.wait()
            withdrawn = await client.post(
                f"{stack.gateway}/v1/subjects/{subject}/consents", json={"purpose": EMAIL, "action": "withdraw"}
            )
            assert withdrawn.status_code == 201, withdrawn.text
            after = (await client.get(url, params=params)).json()
            stop.set()
            await asyncio.gather(*load)
            return seen, after

    seen, after = asyncio.run(scenario())
    assert seen[0]["fields"]["email"] == "astrid@example.com"  # the load did release before the withdrawal
    assert after["fields"] == {}
    assert {w["field"]: w["reason"] for w in after["withheld"]}["email"] == "consent_withdrawn"


def test_every_release_is_audited_with_what_was_released_and_withheld(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    release = profile(stack, subject).json()
    gateway = stack.platform.settings["gateway"]

    async def read() -> Any:
        database = Database(gateway.database_url, gateway.database_schema)
        try:
            async with database.engine.connect() as conn:
                result = await conn.execute(
                    text(
                        "SELECT channel, purpose, subject_id, released, consent_event_id FROM release_record "
                        "WHERE release_id = :id"
                    ),
                    {"id": release["release_id"]},
                )
                return result.one()
        finally:
            await database.dispose()

    row = asyncio.run(read())
    assert row.channel == "email"
    assert row.purpose == EMAIL
    assert row.subject_id == subject
    released = row.released if isinstance(row.released, list) else json.loads(row.released)
    assert sorted(released) == sorted(release["fields"])
    assert row.consent_event_id == consent_state(stack, subject)[0]["event_id"]


def test_contract_purpose_releases_without_consent(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID)
    released = profile(stack, subject, purpose="essential.service.notifications.email").json()
    assert released["fields"] == {"email": "astrid@example.com", "first_name": "Astrid"}


@pytest.mark.parametrize(
    ("purpose", "status", "slug"),
    [
        (None, 400, "validation"),
        ("no.such.purpose", 422, "unknown-purpose"),
        ("marketing.communications.sms", 403, "purpose-not-registered"),
        ("Not A Purpose!", 400, "validation"),
    ],
)
def test_purpose_must_be_named_known_and_registered(
    stack: RunningPlatform, purpose: str | None, status: int, slug: str
) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    response = profile(stack, subject, purpose=purpose)
    assert_problem(response, status, slug)
    assert "astrid@example.com" not in response.text


def _token_signed_with(key: ECKey, stack: RunningPlatform, **claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": stack.gateway,
        "aud": "tillit-gateway",
        "client_id": stack.channels["email"].client_id,
        "sub": stack.channels["email"].client_id,
        "channel": "email",
        "scope": "profiles:read",
        "iat": now,
        "exp": now + 300,
        "jti": "test",
        **claims,
    }
    return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": key.kid}, payload, key)


@pytest.mark.parametrize("kind", ["none", "garbage", "forged", "expired", "wrong-audience", "wrong-scheme"])
def test_requests_without_a_valid_token_are_refused(stack: RunningPlatform, kind: str) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    real_key = stack.access_signing_key()
    forged_key = ECKey.generate_key("P-256", parameters={"kid": real_key.kid})
    authorization = {
        "none": None,
        "garbage": "Bearer not-a-token",
        "forged": f"Bearer {_token_signed_with(forged_key, stack)}",
        "expired": f"Bearer {_token_signed_with(real_key, stack, exp=int(time.time()) - 60)}",
        "wrong-audience": f"Bearer {_token_signed_with(real_key, stack, aud='someone-else')}",
        "wrong-scheme": f"Basic {stack.channels['email'].client_secret}",
    }[kind]
    headers = {"Authorization": authorization} if authorization else {}
    response = profile(stack, subject, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "astrid@example.com" not in response.text


def test_a_correctly_signed_token_works_and_the_scope_is_enforced(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    token = _token_signed_with(stack.access_signing_key(), stack, scope="consents:write")
    response = profile(stack, subject, headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 403, "insufficient-scope")


def test_token_endpoint_accepts_basic_and_post_and_refuses_bad_secrets(stack: RunningPlatform) -> None:
    channel = stack.channels["email"]
    url = f"{stack.gateway}/oauth/token"
    basic = httpx.post(url, data={"grant_type": "client_credentials"}, auth=(channel.client_id, channel.client_secret))
    post = httpx.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": channel.client_id,
            "client_secret": channel.client_secret,
            "scope": "profiles:read",
        },
    )
    assert basic.status_code == 200
    assert post.status_code == 200
    assert post.json()["scope"] == "profiles:read"
    assert basic.json()["token_type"].lower() == "bearer"
    assert 0 < basic.json()["expires_in"] <= 300
    wrong = httpx.post(url, data={"grant_type": "client_credentials"}, auth=(channel.client_id, "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    unknown = httpx.post(
        url, data={"grant_type": "client_credentials", "client_id": "no-such-client", "client_secret": "x"}
    )
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    too_much = httpx.post(
        url,
        data={"grant_type": "client_credentials", "scope": "audit:read"},
        auth=(channel.client_id, channel.client_secret),
    )
    assert too_much.status_code == 400
    assert too_much.json()["error"] == "invalid_scope"
    jwks = httpx.get(f"{stack.gateway}/.well-known/jwks.json").json()
    assert [key["kid"] for key in jwks["keys"]] == [stack.access_signing_key().kid]
    assert all("d" not in key for key in jwks["keys"])


@pytest.mark.parametrize(
    ("subject", "body", "status", "slug"),
    [
        ("bad id with spaces", {"json": {"purpose": EMAIL, "action": "give"}}, 400, "validation"),
        ("x" * 65, {"json": {"purpose": EMAIL, "action": "give"}}, 400, "validation"),
        ("ok-id", {"json": {"purpose": EMAIL, "action": "give", "sneaky": 1}}, 400, "validation"),
        ("ok-id", {"json": {"purpose": EMAIL, "action": "maybe"}}, 400, "validation"),
        (
            "ok-id",
            {"json": {"purpose": EMAIL, "action": "give", "evidence": {"ip": "not-an-ip"}}},
            400,
            "invalid-evidence",
        ),
        ("ok-id", {"json": {"purpose": "no.such.purpose", "action": "give"}}, 422, "unknown-purpose"),
        ("ok-id", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, None),
        ("ok-id", {"content": b"purpose=x", "headers": {"content-type": "text/plain"}}, 415, None),
        ("ok-id", {"json": {"purpose": EMAIL, "action": "give", "evidence": {"page": "x" * 70_000}}}, 413, None),
    ],
)
def test_bad_consent_input_gets_a_problem_and_writes_nothing(
    stack: RunningPlatform, subject: str, body: dict[str, Any], status: int, slug: str | None
) -> None:
    response = capture(stack, subject, body)
    assert_problem(response, status, slug)
    if subject == "ok-id":
        assert consent_state(stack, subject) == []


def test_consent_service_down_means_503_and_no_personal_data(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    assert profile(stack, subject).json()["fields"]
    stack.platform.stop_one("consent")
    try:
        response = profile(stack, subject)
        body = assert_problem(response, 503, "consent-unavailable")
        assert "fields" not in body
        for value in ("astrid@example.com", "Astrid", "Filippa K"):
            assert value not in response.text
        refused = capture(stack, subject, {"json": {"purpose": EMAIL, "action": "withdraw"}})
        assert_problem(refused, 503, "consent-unavailable")
    finally:
        stack.platform.start_one("consent")
        stack.platform.wait_ready(components=["consent"])
    assert profile(stack, subject).json()["fields"]["email"] == "astrid@example.com"


def test_unknown_subject_is_404_not_an_empty_release(stack: RunningPlatform) -> None:
    assert_problem(profile(stack, "nobody-here"), 404, "profile-not-found")
