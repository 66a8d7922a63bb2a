"""Consent-change webhooks end to end: real processes, a real receiver on loopback (the channel's side).

The receiver verifies every delivery with the recipe printed in the README, taken from there.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.platform import RunningPlatform, free_port
from tillit.demo import create_client

pytestmark = pytest.mark.slow

EMAIL = "marketing.communications.email"
SMS = "marketing.communications.sms"
README = Path(__file__).resolve().parent.parent / "README.md"
T = TypeVar("T")


def readme_recipe() -> Callable[[str, str, bytes], bool]:
    """The README's verification code, run as printed."""
    section = README.read_text().split("### Verifying a webhook", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README, to test what it teaches
    return namespace["verify_tillit_webhook"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP endpoint of a channel: answers ``failures`` with 500 first, then 200."""

    port: int
    failures: int = 0
    secret: str = ""
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/tillit"

    def for_subject(self, subject_id: str) -> list[Received]:
        return [item for item in self.received if item.event.get("subject_id") == subject_id]

    def start(self) -> None:
        verify = readme_recipe()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                verified = verify(receiver.secret, self.headers.get("Tillit-Signature", ""), body)
                receiver.received.append(Received(dict(self.headers.items()), body, verified))
                failing = receiver.failures > 0
                receiver.failures -= 1
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@contextmanager
def receiver(failures: int = 0, started: bool = True) -> Iterator[Receiver]:
    endpoint = Receiver(port=free_port(), failures=failures)
    if started:
        endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "it") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.1)


def client_headers(stack: RunningPlatform, channel: str, scopes: list[str]) -> dict[str, str]:
    """A client of its own (the stack's shared ones keep their scopes for the other suites)."""
    credentials = asyncio.run(create_client(stack.platform.settings["gateway"], channel, scopes))
    response = httpx.post(
        f"{stack.gateway}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(credentials.client_id, credentials.client_secret),
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@contextmanager
def webhook(stack: RunningPlatform, headers: dict[str, str], endpoint: Receiver, **extra: Any) -> Iterator[str]:
    response = httpx.post(f"{stack.gateway}/v1/webhooks", json={"url": endpoint.url, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    registered = response.json()
    endpoint.secret = registered["secret"]
    try:
        yield registered["id"]
    finally:
        httpx.delete(f"{stack.gateway}/v1/webhooks/{registered['id']}", headers=headers)


def withdraw(
    stack: RunningPlatform, subject_id: str, purpose: str = EMAIL, headers: dict[str, str] | None = None
) -> str:
    response = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject_id}/consents",
        json={"purpose": purpose, "action": "withdraw"},
        headers=headers or stack.auth("email"),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["event"]["id"])


def deliveries(stack: RunningPlatform, headers: dict[str, str], webhook_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.gateway}/v1/webhooks/{webhook_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


def test_a_withdrawal_arrives_signed_and_the_readme_recipe_verifies_it(stack: RunningPlatform) -> None:
    headers = stack.auth("email")
    subject = stack.new_shopper({"email": "w1@example.com"}, consents=((EMAIL, "give"),))
    with receiver() as endpoint, webhook(stack, headers, endpoint) as webhook_id:
        event_id = withdraw(stack, subject)
        (arrived,) = wait_for(lambda: endpoint.for_subject(subject), what="the withdrawal webhook")

        assert arrived.verified
        event = arrived.event
        assert {key: event[key] for key in ("type", "subject_id", "purpose", "event_id")} == {
            "type": "consent.withdrawn",
            "subject_id": subject,
            "purpose": EMAIL,
            "event_id": event_id,
        }
        assert arrived.headers["Tillit-Webhook-Id"] == event["id"]
        assert arrived.headers["Content-Type"] == "application/json"
        forged = readme_recipe()("whsec_someone-else", arrived.headers["Tillit-Signature"], arrived.body)
        assert not forged
        stale = f"t={int(time.time()) - 600},v1=" + arrived.headers["Tillit-Signature"].split("v1=")[1]
        assert not readme_recipe()(endpoint.secret, stale, arrived.body)

        (delivery,) = wait_for(
            lambda: [d for d in deliveries(stack, headers, webhook_id) if d["id"] == event["id"] and d["delivered_at"]],
            what="the delivery to be recorded as delivered",
        )
        assert (delivery["attempts"], delivery["last_status_code"], delivery["event_type"]) == (
            1,
            204,
            "consent.withdrawn",
        )


def test_a_failing_receiver_is_retried_until_it_takes_the_event(stack: RunningPlatform) -> None:
    headers = stack.auth("email")
    subject = stack.new_shopper({"email": "w2@example.com"}, consents=((EMAIL, "give"),))
    with receiver(failures=2) as endpoint, webhook(stack, headers, endpoint) as webhook_id:
        withdraw(stack, subject)
        attempts = wait_for(lambda: len(endpoint.for_subject(subject)) >= 3 and endpoint.for_subject(subject))
        assert len({item.headers["Tillit-Webhook-Id"] for item in attempts}) == 1
        assert all(item.verified for item in attempts)
        (delivery,) = wait_for(
            lambda: [d for d in deliveries(stack, headers, webhook_id) if d["status"] == "delivered"],
            what="the delivery to be delivered",
        )
        assert (delivery["attempts"], delivery["last_status_code"], delivery["last_error"]) == (3, 204, None)
        assert delivery["delivered_at"] is not None


def test_a_channel_hears_only_of_purposes_it_is_registered_for(stack: RunningPlatform) -> None:
    email_headers = stack.auth("email")
    sms_headers = client_headers(stack, "sms", ["consents:write", "webhooks:manage"])
    subject = stack.new_shopper(
        {"email": "w3@example.com", "phone": "+46701234567"}, consents=((EMAIL, "give"), (SMS, "give"))
    )
    with (
        receiver() as email_end,
        receiver() as sms_end,
        webhook(stack, email_headers, email_end),
        webhook(stack, sms_headers, sms_end, event_types=["consent.withdrawn"]),
    ):
        withdraw(stack, subject, EMAIL)
        wait_for(lambda: email_end.for_subject(subject), what="the e-mail channel's webhook")
        withdraw(stack, subject, SMS, sms_headers)
        wait_for(lambda: len(email_end.for_subject(subject)) == 1 and sms_end.for_subject(subject))
        assert [item.event["purpose"] for item in sms_end.for_subject(subject)] == [SMS]
        assert [item.event["purpose"] for item in email_end.for_subject(subject)] == [EMAIL]


def test_changes_survive_a_receiver_outage_and_a_gateway_restart(stack: RunningPlatform) -> None:
    headers = stack.auth("email")
    subject = stack.new_shopper({"email": "w4@example.com"}, consents=((EMAIL, "give"),))
    with receiver(started=False) as endpoint, webhook(stack, headers, endpoint) as webhook_id:
        withdraw(stack, subject)
        (failing,) = wait_for(
            lambda: [d for d in deliveries(stack, headers, webhook_id) if d["attempts"] >= 1],
            what="a failed attempt",
        )
        assert (failing["status"], failing["last_status_code"]) == ("pending", None)
        assert "Connect" in failing["last_error"]

        stack.platform.stop_one("gateway")
        # While the gateway is down, the ledger records another change: the feed keeps it.
        httpx.post(
            f"{stack.url('consent')}/v1/subjects/{subject}/events",
            json={"purpose": "essential.service.notifications.email", "action": "refuse", "source": "import"},
            headers=stack.service_headers("consent"),
        ).raise_for_status()
        stack.platform.start_one("gateway")
        stack.platform.wait_ready(components=["gateway"])
        endpoint.start()

        arrived = wait_for(
            lambda: len(endpoint.for_subject(subject)) >= 2 and endpoint.for_subject(subject),
            what="both changes after the restart",
        )
        assert {(item.event["type"], item.event["purpose"]) for item in arrived} == {
            ("consent.withdrawn", EMAIL),
            ("consent.refused", "essential.service.notifications.email"),
        }
        assert all(item.verified for item in arrived)


def test_webhooks_belong_to_their_client_and_unsafe_urls_are_refused(stack: RunningPlatform) -> None:
    headers = stack.auth("email")
    other = client_headers(stack, "email", ["webhooks:manage"])
    with receiver() as endpoint, webhook(stack, headers, endpoint) as webhook_id:
        mine = httpx.get(f"{stack.gateway}/v1/webhooks", headers=headers).json()["webhooks"]
        assert [(w["id"], w["url"], w["channel"]) for w in mine] == [(webhook_id, endpoint.url, "email")]
        assert "secret" not in mine[0]
        assert httpx.get(f"{stack.gateway}/v1/webhooks", headers=other).json() == {"webhooks": []}
        for method in ("GET", "DELETE"):
            response = httpx.request(method, f"{stack.gateway}/v1/webhooks/{webhook_id}", headers=other)
            assert response.status_code == 404
        assert httpx.get(f"{stack.gateway}/v1/webhooks/{webhook_id}/deliveries", headers=other).status_code == 404

    for url, problem in (
        ("http://hooks.shop.example/", "must use https"),
        ("https://10.1.2.3/", "private"),
        ("https://consent/v1/changes", "public host"),
    ):
        response = httpx.post(f"{stack.gateway}/v1/webhooks", json={"url": url}, headers=headers)
        assert response.status_code == 422, response.text
        assert problem in response.json()["detail"]
        assert response.headers["content-type"].startswith("application/problem+json")
    no_scope = httpx.post(
        f"{stack.gateway}/v1/webhooks", json={"url": "https://hooks.shop.example/"}, headers=stack.auth("sms")
    )
    assert no_scope.status_code == 403
