"""The preference center on the real platform, over HTTP: one shopper's session never reaches another's data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from preference_center.assets import ensure_assets
from tests.platform import RunningPlatform

pytestmark = pytest.mark.slow

EMAIL = "marketing.communications.email"


def link_token(stack: RunningPlatform, subject_id: str) -> str:
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject_id}/preference-link", json={}, headers=stack.auth("email")
    )
    assert response.status_code == 200, response.text
    return str(response.json()["url"]).rsplit("/link/", 1)[1]


@contextmanager
def signed_in(stack: RunningPlatform, subject_id: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url("preference_center")) as client:
        opened = client.get(f"/link/{link_token(stack, subject_id)}")
        assert opened.status_code == 303, opened.text
        assert opened.headers["location"] == "/"
        yield client


def shopper_api(stack: RunningPlatform, subject_id: str) -> dict[str, str]:
    session = httpx.post(f"{stack.gateway}/v1/shopper/sessions", json={"link_token": link_token(stack, subject_id)})
    return {"Authorization": f"Bearer {session.json()['access_token']}"}


def csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_one_subjects_session_cannot_read_or_change_anothers(stack: RunningPlatform) -> None:
    alice = stack.new_shopper({"email": "alice@example.com", "first_name": "Alice"}, consents=((EMAIL, "give"),))
    bob = stack.new_shopper({"email": "bob@example.com", "first_name": "Bob"}, consents=((EMAIL, "give"),))
    bob_api = shopper_api(stack, bob)
    bob_quiz = httpx.post(
        f"{stack.gateway}/v1/me/quiz-sessions", json={"quiz_id": "style", "locale": "en"}, headers=bob_api
    ).json()
    bob_event = httpx.get(f"{stack.gateway}/v1/me/consents/history", headers=bob_api).json()["events"][0]["event_id"]

    with signed_in(stack, alice) as client:
        overview = client.get("/")
        assert overview.status_code == 200
        assert "alice@example.com" in overview.text
        assert "bob@example.com" not in overview.text
        assert alice not in overview.text, "pages never carry a subject id a form could swap"
        token = csrf(overview.text)

        assert client.get(f"/quiz/{bob_quiz['id']}").status_code == 404
        answered = client.post(
            f"/quiz/{bob_quiz['id']}/answer",
            data={"_csrf_token": token, "question_id": "department", "answer": "mens"},
        )
        assert answered.status_code == 404
        assert client.post(f"/quiz/{bob_quiz['id']}/back", data={"_csrf_token": token}).status_code == 404
        assert client.post(f"/quiz/{bob_quiz['id']}/complete", data={"_csrf_token": token}).status_code == 404
        assert client.get(f"/consents/receipts/{bob_event}").status_code == 404

        # Alice's withdrawal changes Alice only.
        changed = client.post("/consents", data={"_csrf_token": token, "purpose": EMAIL, "action": "withdraw"})
        assert changed.status_code == 303

    bob_state = httpx.get(f"{stack.gateway}/v1/me/quiz-sessions/{bob_quiz['id']}", headers=bob_api).json()
    assert bob_state["answers"] == {}, "Bob's quiz is untouched"
    consents = httpx.get(f"{stack.gateway}/v1/me/consents", headers=bob_api).json()["consents"]
    assert next(item for item in consents if item["purpose"] == EMAIL)["status"] == "given"


def test_forms_without_the_csrf_token_and_forged_cookies_are_refused(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "csrf@example.com"}, consents=((EMAIL, "give"),))
    with signed_in(stack, subject) as client:
        client.get("/consents")
        refused = client.post("/consents", data={"purpose": EMAIL, "action": "withdraw"})
        assert refused.status_code == 403
        assert "This form has expired" in refused.text
        sealed = client.cookies["tillit_pc"]
        client.cookies.set("tillit_pc", sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"))
        assert client.get("/consents").status_code == 401
    api = shopper_api(stack, subject)
    consents = httpx.get(f"{stack.gateway}/v1/me/consents", headers=api).json()["consents"]
    assert next(item for item in consents if item["purpose"] == EMAIL)["status"] == "given"


def test_pages_and_assets_are_served_with_a_strict_policy(stack: RunningPlatform) -> None:
    ensure_assets()  # what `tillit up` does before it starts the preference center
    subject = stack.new_shopper({"email": "csp@example.com"})
    with signed_in(stack, subject) as client:
        page = client.get("/preferences")
        assert page.status_code == 200
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        htmx = client.get("/static/htmx.min.js")
        assert htmx.status_code == 200
        assert "htmx" in htmx.text[:2000]
        assert client.get("/static/../app.py").status_code == 404
