"""The shopper API on the real gateway app, with the internal services replaced by a recording stub.

What is pinned here: links become sessions (and only genuine, unexpired ones), shopper and channel
tokens never stand in for each other, every upstream call names the token's subject and no other,
objects of another subject are a 404, consent evidence comes from the forwarded headers, and an
expired link can ask for a new one through a webhook delivery.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from joserfc import jwt
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from gateway.app import create_app
from gateway.clients_cli import client_service
from gateway.webhooks.models import Webhook
from tillit.keys import ACCESS_TOKEN_KEY, LINK_KEY, load_private_key
from tillit.links import sign_preference_link, sign_unsubscribe
from tillit.problems import NotFound, Unavailable
from tillit.settings import Settings

pytestmark = pytest.mark.anyio

ALICE = "shopper-alice"
BOB = "shopper-bob"
SESSION_OF_BOB = "7a0c6f8e-1b7e-4c62-9b43-2a1f6c1d9e01"
SESSION_OF_ALICE = "0d9d7c3a-5f6e-4b1a-8c2d-3e4f5a6b7c8d"
EVENT_OF_ALICE = "11111111-2222-4333-8444-555555555555"
EVENT_OF_BOB = "99999999-2222-4333-8444-555555555555"
EMAIL = "marketing.communications.email"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass
class StubUpstream:
    """Answers like the services would, and records every call (service, method, path, body, headers)."""

    calls: list[tuple[str, str, str, Any, dict[str, str] | None]] = field(default_factory=list)
    down: bool = False

    def _session(self, session_id: str, subject_id: str) -> dict[str, Any]:
        return {
            "id": session_id,
            "subject_id": subject_id,
            "quiz_id": "style",
            "version": 1,
            "locale": "sv",
            "status": "in_progress",
            "current_question": {
                "id": "fit",
                "kind": "single",
                "text": "Passform?",
                "options": [{"id": "a", "label": "A"}],
            },
            "previous_answer": None,
            "answers": {"colour": "red"},
            "progress": {"answered": 1, "total": 4},
            "started_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(),
            "expires_at": (NOW + timedelta(days=3)).isoformat(),
        }

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        answer: type[Any],
        *,
        json: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        self.calls.append((service, method, path, json, headers))
        if self.down:
            raise Unavailable(f"the {service} service cannot be reached", slug=f"{service}-unavailable")
        body = self._answer(service, method, path, json, params)
        return msgspec.convert(body, answer, strict=False)

    def _answer(self, service: str, method: str, path: str, json: Any, params: Any) -> Any:
        if path == f"/v1/subjects/{ALICE}/profile" and method == "GET":
            return {
                "subject_id": ALICE,
                "fields": {"email": "alice@example.com", "topics": ["denim"]},
                "provenance": {
                    "email": {"source": "import", "updated_at": NOW.isoformat()},
                    "topics": {"source": "quiz:style", "updated_at": NOW.isoformat()},
                },
            }
        if path.endswith("/profile") and method == "PATCH":
            return {"subject_id": ALICE, "fields": json["fields"], "provenance": {}}
        if path.endswith("/profile"):
            raise NotFound("no profile is held for this subject", slug="profile-not-found")
        if path == f"/v1/subjects/{ALICE}/consents":
            return {
                "subject_id": ALICE,
                "as_of": NOW.isoformat(),
                "consents": [
                    {
                        "purpose": EMAIL,
                        "status": "given",
                        "active": True,
                        "since": NOW.isoformat(),
                        "event_id": EVENT_OF_ALICE,
                        "notice_version": 1,
                        "expires_at": None,
                        "needs_reconsent": False,
                    }
                ],
            }
        if path == f"/v1/subjects/{ALICE}/events":
            return {
                "event": {},
                "state": {
                    "purpose": json["purpose"],
                    "status": "withdrawn" if json["action"] == "withdraw" else "pending",
                    "active": False,
                    "since": NOW.isoformat(),
                    "event_id": EVENT_OF_ALICE,
                    "notice_version": 1,
                    "expires_at": None,
                },
                "receipt": "a.b.c" if json["action"] == "withdraw" else None,
                "confirmation": {"token": "confirm-me", "expires_at": NOW.isoformat()}
                if json["action"] == "give"
                else None,
            }
        if path == f"/v1/subjects/{ALICE}/receipts/{EVENT_OF_ALICE}":
            return {"event_id": EVENT_OF_ALICE, "receipt": "eyJhbGciOiJFZERTQSJ9.eyJ4IjoxfQ.c2ln"}
        if "/receipts/" in path:
            raise NotFound("no receipt", slug="receipt-not-found")
        if path == f"/v1/quiz-sessions/{SESSION_OF_ALICE}" or path.startswith(f"/v1/quiz-sessions/{SESSION_OF_ALICE}/"):
            return self._session(SESSION_OF_ALICE, ALICE)
        if path.startswith(f"/v1/quiz-sessions/{SESSION_OF_BOB}"):
            return self._session(SESSION_OF_BOB, BOB)
        if path.startswith("/v1/quiz-sessions/"):
            raise NotFound("no such session", slug="profile-not-found")
        if path == f"/v1/subjects/{ALICE}/quiz-sessions" and method == "GET":
            return {"sessions": [self._record(SESSION_OF_ALICE)]}
        if path == f"/v1/subjects/{ALICE}/quiz-sessions":
            return self._session(SESSION_OF_ALICE, ALICE)
        if path == "/v1/quizzes":
            return {"quizzes": [{"id": "style", "version": 1, "title": {"en": "Style", "sv": "Stil"}}]}
        if path == "/v1/requests" and method == "GET":
            return {"items": [], "next_cursor": None}
        if path == "/v1/requests":
            return {
                "id": "r1",
                "subject_id": json["subject_id"],
                "type": json["type"],
                "status": "received",
                "received_at": NOW.isoformat(),
                "due_at": (NOW + timedelta(days=30)).isoformat(),
                "overdue": False,
            }
        if path.endswith("/export"):
            return {"sections": {"profile_history": [], "quiz_sessions": [self._record(SESSION_OF_ALICE)]}}
        if path.endswith("/history"):
            return {"subject_id": ALICE, "events": []}
        raise AssertionError(f"unexpected call {service} {method} {path}")

    @staticmethod
    def _record(session_id: str) -> dict[str, Any]:
        return {
            "id": session_id,
            "quiz_id": "style",
            "version": 1,
            "locale": "sv",
            "status": "in_progress",
            "current_question": "fit",
            "answers": {"colour": "red"},
            "traits": None,
            "started_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(),
            "expires_at": (datetime.now(UTC) + timedelta(days=3)).isoformat(),
            "completed_at": None,
        }

    def subjects_named(self) -> set[str]:
        named = set()
        for _service, _method, path, body, _headers in self.calls:
            parts = path.split("/")
            if "subjects" in parts:
                named.add(parts[parts.index("subjects") + 1])
            if isinstance(body, dict) and "subject_id" in body:
                named.add(body["subject_id"])
        return named


@pytest.fixture
async def stub() -> StubUpstream:
    return StubUpstream()


@pytest.fixture
async def gateway(settings: Settings, stub: StubUpstream) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app()) as client:
        client.app.state.upstream = stub
        yield client


def link(settings: Settings, subject_id: str = ALICE, *, issued: datetime | None = None, days: int = 7) -> str:
    token, _ = sign_preference_link(
        load_private_key(settings.keys_dir, LINK_KEY),
        issuer=settings.url_of("gateway"),
        subject_id=subject_id,
        client_id="email-client",
        now=issued or datetime.now(UTC),
        lifetime=timedelta(days=days),
    )
    return token


async def session_token(client: AsyncTestClient[Litestar], settings: Settings, subject_id: str = ALICE) -> str:
    response = await client.post("/v1/shopper/sessions", json={"link_token": link(settings, subject_id)})
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_link_becomes_a_short_lived_shopper_session(
    gateway: AsyncTestClient[Litestar], settings: Settings
) -> None:
    response = await gateway.post("/v1/shopper/sessions", json={"link_token": link(settings)})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert 1790 <= body["expires_in"] <= 1800
    claims = jwt.decode(body["access_token"], load_private_key(settings.keys_dir, ACCESS_TOKEN_KEY)).claims
    assert (claims["sub"], claims["aud"], claims["scope"]) == (ALICE, "tillit-shopper", "shopper")
    profile = await gateway.get("/v1/me/profile", headers=bearer(body["access_token"]))
    assert profile.status_code == 200, profile.text
    assert profile.json()["fields"]["topics"] == {
        "value": ["denim"],
        "source": "quiz:style",
        "updated_at": "2026-11-24T12:00:00Z",
    }
    assert "favourite_brands" in profile.json()["editable"]


async def test_tampered_foreign_and_expired_links(gateway: AsyncTestClient[Litestar], settings: Settings) -> None:
    genuine = link(settings)
    header, claims, signature = genuine.split(".")
    forged = f"{header}.{claims}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}"
    unsubscribe = sign_unsubscribe(
        load_private_key(settings.keys_dir, LINK_KEY),
        issuer=settings.url_of("gateway"),
        subject_id=ALICE,
        purpose=EMAIL,
        client_id="c",
        now=datetime.now(UTC),
    )
    for token in (forged, unsubscribe, "a.b.c", "x" * 2048):
        response = await gateway.post("/v1/shopper/sessions", json={"link_token": token})
        assert response.status_code == 401, response.text
        assert response.json()["type"] == "urn:tillit:problem:link-invalid"

    expired = link(settings, issued=datetime.now(UTC) - timedelta(days=8))
    response = await gateway.post("/v1/shopper/sessions", json={"link_token": expired})
    assert response.status_code == 410
    assert response.json()["type"] == "urn:tillit:problem:link-expired"
    assert response.json()["new_link_available"] is True
    assert response.json()["new_link_request"] == "/v1/shopper/link-requests"

    ancient = link(settings, issued=datetime.now(UTC) - timedelta(days=60))
    response = await gateway.post("/v1/shopper/sessions", json={"link_token": ancient})
    assert (response.status_code, response.json()["new_link_available"]) == (410, False)

    unknown = await gateway.post("/v1/shopper/sessions", json={"link_token": genuine, "subject_id": BOB})
    assert unknown.status_code == 400


async def test_shopper_and_channel_tokens_never_stand_in_for_each_other(
    gateway: AsyncTestClient[Litestar], settings: Settings
) -> None:
    async with client_service(settings) as clients:
        credentials = await clients.create("email", ["profiles:read", "audit:read", "consents:write"])
    response = await gateway.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(credentials.client_id, credentials.client_secret),
    )
    channel_token = response.json()["access_token"]
    shopper_token = await session_token(gateway, settings)

    for path in ("/v1/me/profile", "/v1/me/consents", "/v1/quizzes", "/v1/me/export"):
        refused = await gateway.get(path, headers=bearer(channel_token))
        assert refused.status_code == 401, (path, refused.text)
    for path in (f"/v1/subjects/{ALICE}/profile?purpose={EMAIL}", "/v1/audit/releases?subject_id=shopper-alice"):
        refused = await gateway.get(path, headers=bearer(shopper_token))
        assert refused.status_code == 401, (path, refused.text)
    refused = await gateway.post(
        f"/v1/subjects/{ALICE}/consents", json={"purpose": EMAIL, "action": "give"}, headers=bearer(shopper_token)
    )
    assert refused.status_code == 401
    # A link itself is no bearer token either.
    assert (await gateway.get("/v1/me/profile", headers=bearer(link(settings)))).status_code == 401


async def test_every_call_names_only_the_tokens_subject(
    gateway: AsyncTestClient[Litestar], settings: Settings, stub: StubUpstream
) -> None:
    headers = bearer(await session_token(gateway, settings))
    answers = [
        await gateway.get("/v1/me/profile", headers=headers),
        await gateway.patch("/v1/me/profile", json={"topics": ["linen"]}, headers=headers),
        await gateway.get("/v1/me/consents", params={"lang": "sv"}, headers=headers),
        await gateway.get("/v1/me/consents/history", headers=headers),
        await gateway.get(f"/v1/me/receipts/{EVENT_OF_ALICE}", headers=headers),
        await gateway.post("/v1/me/quiz-sessions", json={"quiz_id": "style", "locale": "sv"}, headers=headers),
        await gateway.get("/v1/me/quiz-sessions", headers=headers),
        await gateway.get(f"/v1/me/quiz-sessions/{SESSION_OF_ALICE}", headers=headers),
        await gateway.post(
            f"/v1/me/quiz-sessions/{SESSION_OF_ALICE}/answers",
            json={"question_id": "fit", "answer": "a"},
            headers=headers,
        ),
        await gateway.post(f"/v1/me/quiz-sessions/{SESSION_OF_ALICE}/back", headers=headers),
        await gateway.get("/v1/me/requests", headers=headers),
        await gateway.post("/v1/me/requests", json={"type": "access"}, headers=headers),
        await gateway.get("/v1/me/export", headers=headers),
    ]
    assert [answer.status_code for answer in answers] == [
        200,
        200,
        200,
        200,
        200,
        201,
        200,
        200,
        200,
        200,
        200,
        201,
        200,
    ]
    assert stub.subjects_named() == {ALICE}
    assert stub.calls[1][3] == {"fields": {"topics": ["linen"]}, "source": "preference_page"}

    consents = answers[2].json()
    email = next(item for item in consents["consents"] if item["purpose"] == EMAIL)
    assert email["language"] == "sv"
    assert email["title"] == "Nyhetsbrev och erbjudanden via e-post"
    assert (email["status"], email["double_opt_in"], email["receipt_event_id"]) == ("given", True, EVENT_OF_ALICE)
    sms = next(item for item in consents["consents"] if item["purpose"] == "marketing.communications.sms")
    assert (sms["status"], sms["since"], sms["receipt_event_id"]) == ("none", None, None)

    receipt = answers[4]
    assert receipt.headers["content-type"].startswith("application/jose")
    assert "attachment" in receipt.headers["content-disposition"]
    assert receipt.text.count(".") == 2

    session = answers[7].json()
    assert (session["progress"], session["can_go_back"], session["can_complete"]) == (
        {"step": 2, "answered": 1, "total": 4},
        True,
        False,
    )
    assert [item["id"] for item in answers[6].json()["sessions"]] == [SESSION_OF_ALICE]
    assert "attachment" in answers[12].headers["content-disposition"]
    assert answers[12].json()["subject_id"] == ALICE


async def test_objects_of_another_subject_are_not_found(
    gateway: AsyncTestClient[Litestar], settings: Settings, stub: StubUpstream
) -> None:
    headers = bearer(await session_token(gateway, settings))
    for answer in (
        await gateway.get(f"/v1/me/quiz-sessions/{SESSION_OF_BOB}", headers=headers),
        await gateway.post(
            f"/v1/me/quiz-sessions/{SESSION_OF_BOB}/answers",
            json={"question_id": "fit", "answer": "a"},
            headers=headers,
        ),
        await gateway.post(f"/v1/me/quiz-sessions/{SESSION_OF_BOB}/back", headers=headers),
        await gateway.post(f"/v1/me/quiz-sessions/{SESSION_OF_BOB}/complete", headers=headers),
        await gateway.get(f"/v1/me/receipts/{EVENT_OF_BOB}", headers=headers),
    ):
        assert answer.status_code == 404, answer.text
    # Bob's session was only ever read, never acted on.
    assert not [call for call in stub.calls if call[1] == "POST" and SESSION_OF_BOB in call[2]]
    # Path games: no route under /v1/me takes a subject; a dot-segment walk lands on a channel endpoint (401).
    for path in (f"/v1/me/{BOB}/profile", f"/v1/me/profile/../../subjects/{BOB}/profile", "/v1/me/quiz-sessions/..%2F"):
        assert (await gateway.get(path, headers=headers)).status_code in (400, 401, 404), path
    assert (await gateway.get("/v1/me/profile", params={"subject_id": BOB}, headers=headers)).status_code == 200
    assert stub.subjects_named() <= {ALICE}


async def test_consent_change_carries_forwarded_evidence(
    gateway: AsyncTestClient[Litestar], settings: Settings, stub: StubUpstream
) -> None:
    headers = {
        **bearer(await session_token(gateway, settings)),
        "User-Agent": "Mozilla/5.0 (shopper)",
        "X-Forwarded-For": "203.0.113.77, 10.0.0.1",
        "Referer": "https://shop.example/preferences",
        "Sec-GPC": "1",
    }
    response = await gateway.post(
        "/v1/me/consents", json={"purpose": EMAIL, "action": "withdraw", "language": "nb"}, headers=headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["receipt_event_id"] == EVENT_OF_ALICE
    _, _, path, body, forwarded = stub.calls[-1]
    assert path == f"/v1/subjects/{ALICE}/events"
    assert body["source"] == "preference_page"
    assert body["evidence"] == {
        "ip": "203.0.113.0",
        "user_agent": "Mozilla/5.0 (shopper)",
        "page": "https://shop.example/preferences",
        "language": "nb",
    }
    assert forwarded == {"Sec-GPC": "1"}

    give = await gateway.post(
        "/v1/me/consents", json={"purpose": EMAIL, "action": "give", "notice_version": 1}, headers=headers
    )
    assert (give.status_code, give.json()["status"]) == (201, "pending")
    stale = await gateway.post(
        "/v1/me/consents", json={"purpose": EMAIL, "action": "give", "notice_version": 9}, headers=headers
    )
    assert (stale.status_code, stale.json()["type"]) == (409, "urn:tillit:problem:notice-outdated")
    for body in (
        {"purpose": EMAIL, "action": "give"},
        {"purpose": "no.such.purpose", "action": "withdraw"},
        {"purpose": "essential.service.notifications.email", "action": "withdraw"},
    ):
        assert (await gateway.post("/v1/me/consents", json=body, headers=headers)).status_code == 422, body
    unknown = await gateway.post("/v1/me/consents", json={"purpose": EMAIL, "action": "refuse"}, headers=headers)
    assert unknown.status_code == 400


async def test_profile_edits_are_bounded(gateway: AsyncTestClient[Litestar], settings: Settings) -> None:
    headers = bearer(await session_token(gateway, settings))
    for body in ({"email": "x@example.com"}, {"topics": ["a"] * 21}, {"sizes": {"tops": "XXXL"}}, {"unknown": 1}):
        response = await gateway.patch("/v1/me/profile", json=body, headers=headers)
        assert response.status_code == 400, (body, response.text)
    empty = await gateway.patch("/v1/me/profile", json={}, headers=headers)
    assert (empty.status_code, empty.json()["type"]) == (422, "urn:tillit:problem:empty-change")


async def add_webhooks(client: AsyncTestClient[Litestar], *webhooks: tuple[str, str, list[str]]) -> None:
    async with client.app.state.database.sessionmaker() as session, session.begin():
        for webhook_id, channel, event_types in webhooks:
            session.add(
                Webhook(
                    id=webhook_id,
                    client_id=f"{channel}-client",
                    channel=channel,
                    url="https://mail.example/hooks",
                    secret="s" * 32,
                    event_types=event_types,
                    created_at=datetime.now(UTC),
                )
            )


async def deliveries(client: AsyncTestClient[Litestar]) -> list[Any]:
    async with client.app.state.database.sessionmaker() as session:
        statement = text("SELECT webhook_id, event_type, payload, change_seq FROM webhook_delivery ORDER BY webhook_id")
        return list((await session.exec(statement)).all())  # type: ignore[call-overload]


async def test_a_double_opt_in_sends_its_token_to_the_purposes_channels_only(
    gateway: AsyncTestClient[Litestar], settings: Settings
) -> None:
    requested = ["consent.confirmation_requested"]
    await add_webhooks(gateway, ("w-email", "email", requested), ("w-sms", "sms", requested))
    headers = bearer(await session_token(gateway, settings))
    give = await gateway.post(
        "/v1/me/consents", json={"purpose": EMAIL, "action": "give", "notice_version": 1}, headers=headers
    )
    assert (give.status_code, give.json()["status"]) == (201, "pending")
    assert "confirm-me" not in give.text
    rows = await deliveries(gateway)
    assert [(row[0], row[1]) for row in rows] == [("w-email", "consent.confirmation_requested")]
    payload = msgspec.json.decode(rows[0][2])
    assert (payload["subject_id"], payload["purpose"], payload["confirmation_token"]) == (ALICE, EMAIL, "confirm-me")


async def test_an_expired_link_asks_the_channels_for_a_new_one(
    gateway: AsyncTestClient[Litestar], settings: Settings
) -> None:
    await add_webhooks(
        gateway, ("w-links", "email", ["preference_link.requested"]), ("w-other", "email", ["consent.withdrawn"])
    )
    expired = link(settings, issued=datetime.now(UTC) - timedelta(days=10))
    response = await gateway.post("/v1/shopper/link-requests", json={"link_token": expired})
    assert response.status_code == 202, response.text
    rows = await deliveries(gateway)
    assert [(row[0], row[1]) for row in rows] == [("w-links", "preference_link.requested")]
    payload = msgspec.json.decode(rows[0][2])
    assert (payload["type"], payload["subject_id"], payload["purpose"]) == ("preference_link.requested", ALICE, None)
    assert rows[0][3] < 0

    # Same answer for a subject nobody knows; a forged link is refused; then the subject's limit.
    assert (
        await gateway.post("/v1/shopper/link-requests", json={"link_token": link(settings, "nobody-x")})
    ).status_code == 202
    header, claims, signature = expired.split(".")
    forged = await gateway.post(
        "/v1/shopper/link-requests", json={"link_token": f"{header}.{claims}.{signature[::-1]}"}
    )
    assert forged.status_code == 401
    too_old = link(settings, issued=datetime.now(UTC) - timedelta(days=60))
    assert (await gateway.post("/v1/shopper/link-requests", json={"link_token": too_old})).status_code == 410
    statuses = [
        (await gateway.post("/v1/shopper/link-requests", json={"link_token": expired})).status_code for _ in range(3)
    ]
    assert statuses == [202, 202, 429]


async def test_services_down_is_a_503_not_data(
    gateway: AsyncTestClient[Litestar], settings: Settings, stub: StubUpstream
) -> None:
    headers = bearer(await session_token(gateway, settings))
    stub.down = True
    for path in ("/v1/me/profile", "/v1/me/consents", "/v1/me/export", "/v1/quizzes"):
        response = await gateway.get(path, headers=headers)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
