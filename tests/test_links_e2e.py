"""One-click unsubscribe (RFC 8058) and preference links, end to end on real processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from joserfc.jwk import KeySet

from tests.platform import RunningPlatform
from tillit.links import LinkError, verify_preference_link, verify_unsubscribe

pytestmark = pytest.mark.slow

EMAIL = "marketing.communications.email"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def history(stack: RunningPlatform, subject_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.url('consent')}/v1/subjects/{subject_id}/history", headers=stack.service_headers("consent")
    )
    response.raise_for_status()
    return list(response.json()["events"])


def unsubscribe_link(stack: RunningPlatform, subject_id: str, purpose: str = EMAIL) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/subjects/{subject_id}/unsubscribe-link",
        json={"purpose": purpose},
        headers=stack.auth("email"),
    )


def test_one_click_unsubscribe_withdraws_once_without_any_credentials(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "u1@example.com"}, consents=((EMAIL, "give"),))
    response = unsubscribe_link(stack, subject)
    assert response.status_code == 200, response.text
    link = response.json()
    assert link["url"].startswith(f"{stack.gateway}/unsubscribe/")
    assert link["list_unsubscribe"] == f"<{link['url']}>"
    assert link["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"

    page = httpx.get(link["url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "E-mail newsletter and offers" in page.text
    assert [event["action"] for event in history(stack, subject)] == ["given"], "a GET must never unsubscribe"

    with httpx.Client() as mail_provider:
        first = mail_provider.post(link["url"], data=ONE_CLICK)
        again = mail_provider.post(link["url"], files={"List-Unsubscribe": (None, "One-Click")})
    assert (first.status_code, again.status_code) == (200, 200)
    events = [(event["action"], event["source"]) for event in history(stack, subject)]
    assert events == [("given", "import"), ("withdrawn", "unsubscribe")]


def test_a_tampered_or_foreign_link_is_refused(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "u2@example.com"}, consents=((EMAIL, "give"),))
    url = unsubscribe_link(stack, subject).json()["url"]
    header, claims, signature = url.rsplit("/", 1)[1].split(".")
    other_end = "AA" if signature[-2:] != "AA" else "BB"
    tampered = f"{stack.gateway}/unsubscribe/{header}.{claims}.{signature[:-2]}{other_end}"
    for target in (tampered, f"{stack.gateway}/unsubscribe/a.b.c"):
        for response in (httpx.post(target, data=ONE_CLICK), httpx.get(target)):
            assert response.status_code == 404, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["type"] == "urn:tillit:problem:invalid-link"
    not_one_click = httpx.post(url, data={"unsubscribe": "yes"})
    assert not_one_click.status_code == 400
    assert [event["action"] for event in history(stack, subject)] == ["given"]


def test_links_only_for_purposes_the_channel_may_unsubscribe_from(stack: RunningPlatform) -> None:
    assert unsubscribe_link(stack, "shopper-x", "marketing.communications.sms").status_code == 403
    assert unsubscribe_link(stack, "shopper-x", "essential.service.notifications.email").status_code == 422
    assert unsubscribe_link(stack, "shopper-x", "no.such.purpose").status_code == 422
    no_scope = httpx.post(
        f"{stack.gateway}/v1/subjects/shopper-x/unsubscribe-link", json={"purpose": EMAIL}, headers=stack.auth("sms")
    )
    assert no_scope.status_code == 403


def test_a_preference_link_opens_the_preference_center_and_expires(stack: RunningPlatform) -> None:
    before = datetime.now(UTC)
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/shopper-lars/preference-link", json={}, headers=stack.auth("sms")
    )
    assert response.status_code == 200, response.text
    link = response.json()
    prefix = f"{stack.url('preference_center')}/link/"
    assert link["url"].startswith(prefix)
    expires_at = datetime.fromisoformat(link["expires_at"])
    assert before + timedelta(days=7) - timedelta(seconds=5) <= expires_at <= before + timedelta(days=7, seconds=5)

    keys = KeySet.import_key_set(httpx.get(f"{stack.gateway}/.well-known/link-keys.json").json())
    token = link["url"].removeprefix(prefix)
    opened = verify_preference_link(token, keys, issuer=stack.gateway)
    assert (opened.subject_id, opened.expires_at) == ("shopper-lars", expires_at)
    with pytest.raises(LinkError):
        verify_unsubscribe(token, keys, issuer=stack.gateway)
    with pytest.raises(LinkError, match="expired"):
        verify_preference_link(token, keys, issuer=stack.gateway, now=expires_at + timedelta(minutes=1))
