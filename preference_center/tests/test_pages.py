"""The preference center's pages against a stand-in gateway: session, CSRF, CSP, escaping, languages, failures."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from preference_center.app import create_app
from preference_center.gateway_client import GatewayClient
from preference_center.security import SESSION_COOKIE
from preference_center.web import safe_next
from tillit.settings import load_settings

TOKEN = "shopper-token-a"
PROFILE = {
    "fields": {
        "first_name": {"value": "<script>alert(1)</script>", "source": "import", "updated_at": "2026-11-01T10:00:00Z"},
        "preferred_language": {"value": "sv", "source": "import", "updated_at": "2026-11-01T10:00:00Z"},
        "sizes": {"value": {"tops": "M", "shoes": 39.5}, "source": "preference_page", "updated_at": None},
        "price_range": {"value": {"min": 300, "max": 2500, "currency": "SEK"}, "source": "import", "updated_at": None},
    },
    "editable": ["preferred_language", "sizes", "price_range"],
}
CONSENTS = {
    "language": "sv",
    "consents": [
        {
            "purpose": "marketing.communications.email",
            "title": "Nyhetsbrev",
            "notice_text": "Vi skickar <b>nyhetsbrev</b>.",
            "language": "sv",
            "notice_version": 2,
            "material": True,
            "double_opt_in": True,
            "status": "given",
            "active": False,
            "since": "2026-01-02T10:00:00Z",
            "expires_at": None,
            "needs_reconsent": True,
            "consented_notice_version": 1,
            "receipt_event_id": "e1",
        }
    ],
}


class FakeGateway:
    """Answers like the gateway's shopper API and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, dict[str, str]]] = []
        self.down = False
        self.link_status = 201

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body, dict(request.headers)))
        if self.down:
            raise httpx.ConnectError("refused")
        path = request.url.path
        if path == "/v1/shopper/sessions":
            if self.link_status == 201:
                return httpx.Response(201, json={"access_token": TOKEN, "token_type": "Bearer", "expires_in": 1800})
            slug = "link-expired" if self.link_status == 410 else "link-invalid"
            problem = {"type": f"https://tillit.dev/problems/{slug}", "title": "x", "status": self.link_status}
            return httpx.Response(self.link_status, json={**problem, "new_link_available": True})
        if path == "/v1/shopper/link-requests":
            return httpx.Response(202, json={"status": "accepted", "detail": "ok"})
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"type": "x/unauthorized", "title": "no", "status": 401})
        if path == "/v1/me/profile":
            return httpx.Response(200, json=PROFILE)
        if path == "/v1/me/consents" and request.method == "GET":
            return httpx.Response(200, json=CONSENTS)
        if path == "/v1/me/consents" and request.method == "POST":
            return httpx.Response(201, json={"purpose": body["purpose"], "status": "withdrawn"})
        if path == "/v1/me/consents/history":
            return httpx.Response(200, json={"events": []})
        return httpx.Response(404, json={"type": "x/not-found", "title": "no", "status": 404})

    def paths(self) -> list[str]:
        return [f"{method} {path}" for method, path, _, _ in self.calls]


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(gateway: FakeGateway, tmp_path: Path) -> Iterator[TestClient[Any]]:
    settings = load_settings("preference_center", {"TILLIT_DATA_DIR": str(tmp_path)})
    fake = GatewayClient("http://gateway.test", transport=httpx.MockTransport(gateway))
    with TestClient(create_app(settings, gateway=fake), base_url="http://pc.test") as test_client:
        yield test_client


def csrf(html: str) -> str:
    match = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def sign_in(client: TestClient[Any]) -> None:
    response = client.get("/link/a-link-token", follow_redirects=False)
    assert response.status_code == 303


def test_a_link_opens_a_session_in_an_httponly_lax_cookie_and_leaves_the_token_behind(
    client: TestClient[Any], gateway: FakeGateway
) -> None:
    response = client.get("/link/a-link-token", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert response.headers["referrer-policy"] == "no-referrer"
    cookie = next(value for value in response.headers.get_list("set-cookie") if value.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie, "plain http: a Secure cookie would never come back"
    assert TOKEN not in cookie, "the shopper token is sealed, not readable in the cookie"
    assert gateway.calls[0][2] == {"link_token": "a-link-token"}

    page = client.get("/")
    assert page.status_code == 200
    assert '<html lang="sv">' in page.text, "the profile's language wins"


def test_the_cookie_is_secure_behind_tls(client: TestClient[Any]) -> None:
    response = client.get("/link/a-link-token", headers={"x-forwarded-proto": "https"}, follow_redirects=False)
    cookies = response.headers.get_list("set-cookie")
    assert all("Secure" in cookie for cookie in cookies), cookies
    assert any(cookie.startswith(SESSION_COOKIE) for cookie in cookies)


@pytest.mark.parametrize(
    ("status", "text", "renew"), [(410, "This link has expired", True), (401, "does not work", False)]
)
def test_expired_and_tampered_links_get_a_friendly_page(
    client: TestClient[Any], gateway: FakeGateway, status: int, text: str, renew: bool
) -> None:
    gateway.link_status = status
    response = client.get("/link/bad-token", follow_redirects=False)
    assert response.status_code in (400, 410)
    assert text in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert ('action="/link/renew"' in response.text) is renew
    if renew:
        sent = client.post("/link/renew", data={"_csrf_token": csrf(response.text), "link_token": "bad-token"})
        assert sent.status_code == 202
        assert "A new link is on its way" in sent.text
        assert gateway.calls[-1][1:3] == ("/v1/shopper/link-requests", {"link_token": "bad-token"})


def test_every_page_has_a_strict_csp_and_server_timing(client: TestClient[Any]) -> None:
    sign_in(client)
    for path in ("/", "/consents"):
        response = client.get(path)
        policy = response.headers["content-security-policy"]
        assert "unsafe-inline" not in policy
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["server-timing"].startswith("app;dur=")
        assert "<script>" not in response.text.replace('<script src="/static/', ""), "no inline script"
        assert " style=" not in response.text, "no inline style"


def test_output_is_escaped(client: TestClient[Any]) -> None:
    sign_in(client)
    overview = client.get("/").text
    assert "<script>alert(1)</script>" not in overview
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in overview
    consents = client.get("/consents").text
    assert "&lt;b&gt;nyhetsbrev&lt;/b&gt;" in consents


def test_a_post_without_the_csrf_token_is_refused_and_reaches_nobody(
    client: TestClient[Any], gateway: FakeGateway
) -> None:
    sign_in(client)
    client.get("/consents")
    before = len(gateway.calls)
    response = client.post("/consents", data={"purpose": "marketing.communications.email", "action": "withdraw"})
    assert response.status_code == 403
    assert "This form has expired" in response.text or "Formuläret har gått ut" in response.text
    forged = client.post(
        "/consents", data={"_csrf_token": "0" * 128, "purpose": "marketing.communications.email", "action": "withdraw"}
    )
    assert forged.status_code == 403
    assert len(gateway.calls) == before


def test_withdrawal_is_one_post_forwarding_the_evidence(client: TestClient[Any], gateway: FakeGateway) -> None:
    sign_in(client)
    page = client.get("/consents")
    assert "Pausat" in page.text, "a material notice change shows the re-consent state"
    response = client.post(
        "/consents",
        data={"_csrf_token": csrf(page.text), "purpose": "marketing.communications.email", "action": "withdraw"},
        headers={"user-agent": "UA/1", "referer": "http://pc.test/consents", "sec-gpc": "1"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    method, path, body, headers = gateway.calls[-1]
    assert (method, path) == ("POST", "/v1/me/consents")
    assert body == {"purpose": "marketing.communications.email", "action": "withdraw", "language": "sv"}
    assert headers["user-agent"] == "UA/1"
    assert headers["referer"] == "http://pc.test/consents"
    assert headers["sec-gpc"] == "1"
    assert headers["x-forwarded-for"]


def test_a_forged_or_foreign_session_cookie_is_not_a_session(client: TestClient[Any], gateway: FakeGateway) -> None:
    client.cookies.set(SESSION_COOKIE, "AAAA" + "x" * 60)
    response = client.get("/consents")
    assert response.status_code == 401
    assert "Your session has ended" in response.text
    assert gateway.calls == []


def test_a_gateway_that_is_down_gets_a_friendly_503(client: TestClient[Any], gateway: FakeGateway) -> None:
    sign_in(client)
    gateway.down = True
    response = client.get("/consents")
    assert response.status_code == 503
    assert "Nothing was changed" in response.text or "Inget har ändrats" in response.text


def test_accept_language_chooses_the_language_without_a_session(client: TestClient[Any]) -> None:
    assert '<html lang="et">' in client.get("/", headers={"accept-language": "et-EE,et;q=0.9,en;q=0.5"}).text
    assert '<html lang="nb">' in client.get("/", headers={"accept-language": "no"}).text
    assert '<html lang="en">' in client.get("/", headers={"accept-language": "de"}).text


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "\\\\evil", "javascript:alert(1)"])
def test_going_back_after_a_language_switch_stays_on_this_site(target: str) -> None:
    assert safe_next(target) == "/"


def test_static_files_are_compressed_and_pages_are_not(client: TestClient[Any]) -> None:
    static = client.get("/static/app.css", headers={"accept-encoding": "gzip"})
    assert static.headers.get("content-encoding") == "gzip"
    page = client.get("/", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in page.headers, "a page holds a CSRF token: never compressed (BREACH)"
