"""The shopper API end to end on real processes: a preference link, a session, and only one's own data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.platform import RunningPlatform, free_port
from tests.test_webhooks_e2e import receiver, wait_for
from tillit.keys import LINK_KEY, load_private_key
from tillit.links import sign_preference_link

pytestmark = pytest.mark.slow

EMAIL = "marketing.communications.email"
SMS = "marketing.communications.sms"


def preference_link(stack: RunningPlatform, subject_id: str) -> str:
    """The token of a link the e-mail channel asks for, as the shopper's browser would open it."""
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject_id}/preference-link", json={}, headers=stack.auth("email")
    )
    assert response.status_code == 200, response.text
    return str(response.json()["url"]).rsplit("/link/", 1)[1]


def signed_link(stack: RunningPlatform, subject_id: str, issued: datetime) -> str:
    token, _ = sign_preference_link(
        load_private_key(stack.keys_dir, LINK_KEY),
        issuer=stack.gateway,
        subject_id=subject_id,
        client_id="test",
        now=issued,
        lifetime=timedelta(days=7),
    )
    return token


def shopper(stack: RunningPlatform, subject_id: str) -> dict[str, str]:
    response = httpx.post(
        f"{stack.gateway}/v1/shopper/sessions", json={"link_token": preference_link(stack, subject_id)}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


def me(stack: RunningPlatform, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.gateway}/v1/me{path}", headers=headers, **kwargs)


def release(stack: RunningPlatform, subject_id: str, purpose: str = EMAIL) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.gateway}/v1/subjects/{subject_id}/profile", params={"purpose": purpose}, headers=stack.auth("email")
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_withdrawal_on_the_preference_page_holds_back_the_next_release(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(
        {"email": "pc1@example.com", "first_name": "Pia", "topics": ["denim"]}, consents=((EMAIL, "give"),)
    )
    assert release(stack, subject)["fields"]["email"] == "pc1@example.com"
    headers = shopper(stack, subject)

    profile = me(stack, "GET", "/profile", headers).json()
    assert profile["fields"]["email"]["value"] == "pc1@example.com"
    assert profile["fields"]["email"]["source"] == "import"
    consents = me(stack, "GET", "/consents", headers, params={"lang": "et"}).json()
    email = next(item for item in consents["consents"] if item["purpose"] == EMAIL)
    assert (email["status"], email["language"], email["double_opt_in"]) == ("given", "et", True)
    assert email["title"] == "E-posti uudiskiri ja pakkumised"

    evidence = {
        "User-Agent": "Mozilla/5.0 e2e",
        "X-Forwarded-For": "198.51.100.23",
        "Referer": "https://shop.example/p",
    }
    withdrawn = me(stack, "POST", "/consents", {**headers, **evidence}, json={"purpose": EMAIL, "action": "withdraw"})
    assert withdrawn.status_code == 201, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    event_id = withdrawn.json()["receipt_event_id"]

    after = release(stack, subject)
    assert after["fields"] == {}
    assert {item["field"]: item["reason"] for item in after["withheld"]}["email"] == "consent_withdrawn"

    history = me(stack, "GET", "/consents/history", headers).json()["events"]
    assert [(event["action"], event["source"]) for event in history] == [
        ("given", "import"),
        ("withdrawn", "preference_page"),
    ]
    ledger = httpx.get(
        f"{stack.url('consent')}/v1/subjects/{subject}/history", headers=stack.service_headers("consent")
    ).json()["events"]
    assert ledger[-1]["evidence"]["ip"].startswith("198.51.100.")
    assert ledger[-1]["evidence"]["ip"] != "198.51.100.23"
    assert ledger[-1]["evidence"]["page"] == "https://shop.example/p"

    receipt = me(stack, "GET", f"/receipts/{event_id}", headers)
    assert receipt.status_code == 200
    assert receipt.headers["content-type"].startswith("application/jose")
    assert receipt.text.count(".") == 2

    # Giving again: e-mail marketing is double opt-in, so it waits for the confirmation link.
    notice = email["notice_version"]
    again = me(stack, "POST", "/consents", headers, json={"purpose": EMAIL, "action": "give", "notice_version": notice})
    assert (again.status_code, again.json()["status"]) == (201, "pending")
    assert release(stack, subject)["fields"] == {}

    export = me(stack, "GET", "/export", headers)
    assert export.status_code == 200
    assert "attachment" in export.headers["content-disposition"]
    body = export.json()
    assert body["subject_id"] == subject
    assert [item["channel"] for item in body["recipients"]] == ["email", "email", "email"]
    assert body["recipients"][0]["fields"]
    assert [event["action"] for event in body["consent_history"]] == ["given", "withdrawn", "pending"]


def test_one_shopper_never_reaches_another(stack: RunningPlatform) -> None:
    alice = stack.new_shopper({"email": "alice-pc@example.com"}, consents=((SMS, "give"),))
    bob = stack.new_shopper({"email": "bob-pc@example.com", "topics": ["wool"]}, consents=((SMS, "give"),))
    as_alice, as_bob = shopper(stack, alice), shopper(stack, bob)

    started = me(stack, "POST", "/quiz-sessions", as_bob, json={"quiz_id": "style", "locale": "nb"})
    assert started.status_code == 201, started.text
    bobs_session = started.json()
    question = bobs_session["current_question"]
    assert (bobs_session["progress"]["step"], bobs_session["can_go_back"]) == (1, False)
    bobs_withdrawal = me(stack, "POST", "/consents", as_bob, json={"purpose": SMS, "action": "withdraw"}).json()
    bobs_event = bobs_withdrawal["receipt_event_id"]

    session_path = f"/quiz-sessions/{bobs_session['id']}"
    answer = {"question_id": question["id"], "answer": question["options"][0]["id"]}
    for method, path, body in (
        ("GET", session_path, None),
        ("POST", f"{session_path}/answers", answer),
        ("POST", f"{session_path}/back", None),
        ("POST", f"{session_path}/complete", None),
        ("GET", f"/receipts/{bobs_event}", None),
    ):
        response = me(stack, method, path, as_alice, json=body)
        assert response.status_code == 404, (path, response.text)
    # Bob's session is untouched and his; nothing in Alice's answers names him.
    assert me(stack, "GET", session_path, as_bob).json()["answers"] == {}
    assert [s["id"] for s in me(stack, "GET", "/quiz-sessions", as_bob).json()["sessions"]] == [bobs_session["id"]]
    assert me(stack, "GET", "/quiz-sessions", as_alice).json()["sessions"] == []
    for path, params in (("/profile", {"subject_id": bob}), ("/export", None), ("/consents/history", None)):
        text = me(stack, "GET", path, as_alice, params=params).text
        assert bob not in text, path
        assert "bob-pc@example.com" not in text, path
    assert me(stack, "GET", f"/{bob}/profile", as_alice).status_code == 404
    assert httpx.get(f"{stack.gateway}/v1/subjects/{bob}/profile?purpose={SMS}", headers=as_alice).status_code == 401


def test_links_tokens_and_their_limits(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "links-pc@example.com"})
    token = preference_link(stack, subject)
    header, claims, signature = token.split(".")
    tampered = f"{header}.{claims}.{signature[:-3]}{'AAA' if signature[-3:] != 'AAA' else 'BBB'}"
    refused = httpx.post(f"{stack.gateway}/v1/shopper/sessions", json={"link_token": tampered})
    assert (refused.status_code, refused.json()["type"]) == (401, "urn:tillit:problem:link-invalid")

    expired = signed_link(stack, subject, datetime.now(UTC) - timedelta(days=9))
    gone = httpx.post(f"{stack.gateway}/v1/shopper/sessions", json={"link_token": expired})
    assert (gone.status_code, gone.json()["type"], gone.json()["new_link_available"]) == (
        410,
        "urn:tillit:problem:link-expired",
        True,
    )

    # The e-mail channel hears that the shopper wants a new link.
    receiver = f"http://127.0.0.1:{free_port()}/hook"
    registered = httpx.post(
        f"{stack.gateway}/v1/webhooks",
        json={"url": receiver, "event_types": ["preference_link.requested"]},
        headers=stack.auth("email"),
    )
    assert registered.status_code == 201, registered.text
    webhook_id = registered.json()["id"]
    try:
        accepted = httpx.post(f"{stack.gateway}/v1/shopper/link-requests", json={"link_token": expired})
        assert accepted.status_code == 202, accepted.text
        assert httpx.post(f"{stack.gateway}/v1/shopper/link-requests", json={"link_token": tampered}).status_code == 401
        deliveries = httpx.get(
            f"{stack.gateway}/v1/webhooks/{webhook_id}/deliveries", headers=stack.auth("email")
        ).json()["deliveries"]
        assert [delivery["event_type"] for delivery in deliveries] == ["preference_link.requested"]
    finally:
        httpx.delete(f"{stack.gateway}/v1/webhooks/{webhook_id}", headers=stack.auth("email"))

    # Shopper and channel tokens never stand in for each other.
    as_shopper = shopper(stack, subject)
    assert me(stack, "GET", "/profile", stack.auth("email")).status_code == 401
    assert httpx.get(f"{stack.gateway}/v1/quizzes", headers=stack.auth("email")).status_code == 401
    channel_only = httpx.post(f"{stack.gateway}/v1/subjects/{subject}/preference-link", json={}, headers=as_shopper)
    assert channel_only.status_code == 401
    assert me(stack, "GET", "/profile", {"Authorization": f"Bearer {token}"}).status_code == 401


def test_quiz_requests_and_profile_edits(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "quiz-pc@example.com"})
    headers = shopper(stack, subject)
    quizzes = httpx.get(f"{stack.gateway}/v1/quizzes", headers=headers).json()["quizzes"]
    assert {"style", "gift-finder"} <= {quiz["id"] for quiz in quizzes}

    session = me(stack, "POST", "/quiz-sessions", headers, json={"quiz_id": "style", "locale": "sv"}).json()
    question = session["current_question"]
    answered = me(
        stack,
        "POST",
        f"/quiz-sessions/{session['id']}/answers",
        headers,
        json={"question_id": question["id"], "answer": _an_answer(question)},
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["can_go_back"] is True
    back = me(stack, "POST", f"/quiz-sessions/{session['id']}/back", headers)
    assert (back.status_code, back.json()["current_question"]["id"]) == (200, question["id"])
    assert me(stack, "GET", "/quiz-sessions/00000000-0000-4000-8000-000000000000", headers).status_code == 404

    edited = me(
        stack,
        "PATCH",
        "/profile",
        headers,
        json={"favourite_brands": ["Acme"], "price_range": {"min": 100, "max": 900, "currency": "SEK"}},
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["fields"]["favourite_brands"] == {
        "value": ["Acme"],
        "source": "preference_page",
        "updated_at": edited.json()["fields"]["favourite_brands"]["updated_at"],
    }
    upside_down = me(
        stack, "PATCH", "/profile", headers, json={"price_range": {"min": 900, "max": 1, "currency": "SEK"}}
    )
    assert upside_down.status_code == 422
    assert me(stack, "PATCH", "/profile", headers, json={"email": "new@example.com"}).status_code == 400

    created = me(stack, "POST", "/requests", headers, json={"type": "access"})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "received"
    assert me(stack, "POST", "/requests", headers, json={"type": "access"}).status_code == 409
    listed = me(stack, "GET", "/requests", headers).json()["requests"]
    assert [(item["type"], item["due_at"]) for item in listed] == [("access", created.json()["due_at"])]


def _an_answer(question: dict[str, Any]) -> Any:
    if question["kind"] == "multiple":
        return [question["options"][0]["id"]]
    if question["kind"] == "scale":
        return question["min"]
    return question["options"][0]["id"]


def test_a_double_opt_in_from_the_page_is_confirmed_through_the_email_channel(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "doi-pc@example.com", "first_name": "Dag"})
    headers = shopper(stack, subject)
    notice = next(
        item["notice_version"]
        for item in me(stack, "GET", "/consents", headers).json()["consents"]
        if item["purpose"] == EMAIL
    )
    with receiver() as endpoint:
        registered = httpx.post(
            f"{stack.gateway}/v1/webhooks",
            json={"url": endpoint.url, "event_types": ["consent.confirmation_requested"]},
            headers=stack.auth("email"),
        )
        assert registered.status_code == 201, registered.text
        endpoint.secret = registered.json()["secret"]
        try:
            given = me(
                stack, "POST", "/consents", headers, json={"purpose": EMAIL, "action": "give", "notice_version": notice}
            )
            assert (given.status_code, given.json()["status"]) == (201, "pending")
            assert release(stack, subject)["fields"] == {}
            delivery = wait_for(lambda: endpoint.for_subject(subject), what="the confirmation request")[0]
        finally:
            httpx.delete(f"{stack.gateway}/v1/webhooks/{registered.json()['id']}", headers=stack.auth("email"))
    assert delivery.verified
    event = delivery.event
    assert (event["type"], event["purpose"]) == ("consent.confirmation_requested", EMAIL)
    confirmed = httpx.post(
        f"{stack.gateway}/v1/consents/confirmations",
        json={"token": event["confirmation_token"]},
        headers=stack.auth("email"),
    )
    assert confirmed.status_code == 201, confirmed.text
    assert release(stack, subject)["fields"]["email"] == "doi-pc@example.com"
    states = me(stack, "GET", "/consents", headers).json()["consents"]
    assert next(item["status"] for item in states if item["purpose"] == EMAIL) == "given"
