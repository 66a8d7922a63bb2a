"""The decision's fast path (gateway.fast_decision) against Litestar's route, on the real gateway app.

As for the release (test_fast_release): the same request is sent in its common form (answered by the
fast path) and with a trailing ``&`` in the query (which the fast path leaves to Litestar's route, and
Litestar reads as the same query). Status, headers and body must be the same, errors included; both
must leave the same audit rows and send the rules service the same request. Requests outside the
common form must reach Litestar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.decisions import DECISION_BODY_BYTES
from gateway.fast_decision import FastDecision
from gateway.fast_release import FastRelease
from gateway.ratelimit import RateLimiter
from gateway.tests.fast_paths import (
    ASTRID,
    PURPOSE,
    StubUpstream,
    access_token,
    audit_rows,
    same_answer,
)
from tillit.problems import NotFound, TillitError, Unavailable
from tillit.settings import Settings
from tillit.testing import http_scope

pytestmark = pytest.mark.anyio

PRODUCT = {"id": "p1", "brand": "Hope", "category": "jeans", "department": "womens", "price": 999.0}
BODY = msgspec.json.encode(
    {"context": {"page": "home", "visit_count": 3}, "slots": ["home.hero"], "candidates": [PRODUCT], "limit": 5}
)


class _Refused(TillitError):
    """What ``Upstream`` raises for a 400 from the rules service."""

    status_code = 400
    slug = "validation"
    title = "The request is not valid"


@dataclass
class Gateway:
    client: AsyncTestClient[Litestar]
    stub: StubUpstream
    token: str
    profiles_only_token: str
    litestar_calls: list[str]

    async def decide(
        self,
        subject_id: str,
        query: str,
        body: bytes = BODY,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"content-type": "application/json"} if headers is None else headers
        if token != "":
            sent = {**sent, "Authorization": f"Bearer {token or self.token}"}
        return await self.client.post(f"/v1/subjects/{subject_id}/decisions?{query}", content=body, headers=sent)

    async def audit_rows(self, subject_id: str) -> list[tuple[str, str]]:
        return await audit_rows(self.client, subject_id)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    stub = StubUpstream()
    async with AsyncTestClient(app=create_app()) as client:
        client.app.state.upstream = stub
        front = client.app.asgi_handler
        assert isinstance(front, FastRelease)
        fast = front._fallback
        assert isinstance(fast, FastDecision)
        litestar_calls: list[str] = []
        litestar = fast._fallback

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                litestar_calls.append(f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}")
            await litestar(scope, receive, send)

        fast._fallback = recorded
        token = await access_token(client, settings, ["profiles:read", "decisions:read"])
        profiles_only = await access_token(client, settings, ["profiles:read"])
        litestar_calls.clear()
        yield Gateway(client, stub, token, profiles_only, litestar_calls)


def _routed(subject_id: str, query: str) -> str:
    return f"POST /v1/subjects/{subject_id}/decisions?{query}"


async def _both(gateway: Gateway, send: Callable[[str], Awaitable[httpx.Response]]) -> httpx.Response:
    """``send`` with the common query (fast path), then with the same query Litestar answers; the fast one."""
    fast = await send(f"purpose={PURPOSE}")
    assert gateway.litestar_calls == []
    routed = await send(f"purpose={PURPOSE}&")
    assert len(gateway.litestar_calls) == 1
    same_answer(fast, routed)
    if gateway.stub.decided:
        first, second = gateway.stub.decided
        assert first == second
    return fast


async def test_the_common_decision_takes_the_fast_path_and_answers_as_the_route_does(gateway: Gateway) -> None:
    fast = await _both(gateway, lambda query: gateway.decide(ASTRID, query))
    assert gateway.litestar_calls == [_routed(ASTRID, f"purpose={PURPOSE}&")]
    assert fast.headers["content-type"] == "application/json"
    answer = fast.json()
    assert answer["subject_id"] == ASTRID
    assert answer["products"] == ["p1"]
    assert answer["reasons"] == [{"rule": "boost-hope", "explanation": "product.brand is Hope"}]
    assert await gateway.audit_rows(ASTRID) == [(PURPOSE, "released"), (PURPOSE, "released")]
    sent = gateway.stub.decided[0]
    assert sent["profile"] == {"sizes": {"tops": "M"}}  # only what the release rule lets out
    assert sent["candidates"] == [PRODUCT]
    assert sent["context"] == {"page": "home", "visit_count": 3, "slots": ["home.hero"]}
    assert sent["limit"] == 5
    assert "shopper" not in sent["assignment_key"]


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        (b"{}", 200, None),
        (b'{"candidates": null, "context": {"visit_count": 0.0}, "limit": 2.0}', 200, None),
        (b'{"context": {"weather": "rain"}}', 400, "`$.context`"),
        (b'{"slots": ["Not a slot"]}', 400, "`$.slots[0]`"),
        (b'{"limit": 1.5}', 400, "`$.limit`"),
        (b'{"limit": "1"}', 400, "`$.limit`"),
        (b'{"candidates": [1,}', 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b'{"slots": ["home.\xff"]}', 400, "not valid UTF-8"),
        (b"[" * 5000 + b"]" * 5000, 400, None),
        (
            b'{"context": {"slots": ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"]}, "slots": ["x"]}',
            422,
            None,
        ),
    ],
)
async def test_bodies_are_held_to_the_same_schema_on_both_paths(
    gateway: Gateway, body: bytes, status: int, named: str | None
) -> None:
    fast = await _both(gateway, lambda query: gateway.decide(ASTRID, query, body))
    assert fast.status_code == status, fast.text
    if status != 200:
        assert fast.headers["content-type"] == "application/problem+json"
        assert fast.json()["instance"] == f"/v1/subjects/{ASTRID}/decisions"
        assert gateway.stub.reads == []  # refused before anything was read or audited
        assert await gateway.audit_rows(ASTRID) == []
    if named is not None:
        assert named in fast.json()["detail"]


_REFUSED_ID = _Refused("body: Expected `str` matching regex '^x$' - at `$.candidates[1].id`")


@pytest.mark.parametrize(
    ("subject_id", "purpose", "token", "failure", "rules_failure", "status", "audited"),
    [
        ("shopper-bo", PURPOSE, "", None, None, 401, []),
        ("shopper-bo", PURPOSE, "not-a-token", None, None, 401, []),
        ("shopper-bo", PURPOSE, "profiles-only", None, None, 403, []),
        ("shopper-bo", "marketing.communications.email", None, None, None, 403, ["refused", "refused"]),
        ("shopper-bo", "no.such.purpose", None, None, None, 422, []),
        ("shopper-bo", PURPOSE, None, NotFound("no profile is held", slug="profile-not-found"), None, 404, []),
        ("shopper-bo", PURPOSE, None, Unavailable("the consent service cannot be reached", slug="x"), None, 503, []),
        ("shopper-bo", PURPOSE, None, RuntimeError("a bug"), None, 500, []),
        ("shopper-bo", PURPOSE, None, None, Unavailable("rules down", slug="rules-unavailable"), 503, []),
        ("shopper-bo", PURPOSE, None, None, _REFUSED_ID, 400, []),
        ("shopper-bo", PURPOSE, None, None, _Refused("body: Expected `object` - at `$.profile`"), 400, []),
    ],
)
async def test_errors_on_the_fast_path_are_the_routes_problem_documents(
    gateway: Gateway,
    subject_id: str,
    purpose: str,
    token: str | None,
    failure: Exception | None,
    rules_failure: Exception | None,
    status: int,
    audited: list[str],
) -> None:
    if failure is not None:
        gateway.stub.failures[subject_id] = failure
    gateway.stub.rules_failure = rules_failure
    token = gateway.profiles_only_token if token == "profiles-only" else token
    fast = await gateway.decide(subject_id, f"purpose={purpose}", token=token)
    assert gateway.litestar_calls == []
    routed = await gateway.decide(subject_id, f"purpose={purpose}&", token=token)
    assert len(gateway.litestar_calls) == 1

    same_answer(fast, routed)
    assert fast.status_code == status
    assert fast.headers["content-type"] == "application/problem+json"
    assert fast.json()["status"] == status
    assert fast.json()["instance"] == f"/v1/subjects/{subject_id}/decisions"
    if status == 401:
        assert fast.headers["www-authenticate"] == 'Bearer realm="tillit"'
    if rules_failure is _REFUSED_ID:
        assert fast.json()["detail"].endswith("`$.candidates[1].id`")
        assert fast.json()["errors"] == [{"message": _REFUSED_ID.detail.removeprefix("body: "), "source": "body"}]
    assert [outcome for _, outcome in await gateway.audit_rows(subject_id)] == audited


async def test_the_rate_limit_holds_on_the_fast_path(gateway: Gateway) -> None:
    gateway.client.app.state.rate_limiter = RateLimiter(scale=1e-6, clock=lambda: 0.0)
    assert (await gateway.decide(ASTRID, f"purpose={PURPOSE}")).status_code == 200
    fast = await gateway.decide(ASTRID, f"purpose={PURPOSE}")
    routed = await gateway.decide(ASTRID, f"purpose={PURPOSE}&")
    same_answer(fast, routed)
    assert fast.status_code == 429
    assert fast.headers["retry-after"]
    assert gateway.stub.reads == [(ASTRID, PURPOSE)]
    assert gateway.litestar_calls == [_routed(ASTRID, f"purpose={PURPOSE}&")]


def _events(*chunks: bytes, complete: bool = True) -> list[dict[str, Any]]:
    """The body in ``chunks``; without ``complete`` the last says more is coming (and the client then goes)."""
    last = len(chunks) - 1
    return [
        {"type": "http.request", "body": chunk, "more_body": n < last or not complete} for n, chunk in enumerate(chunks)
    ]


async def _raw_post(
    gateway: Gateway,
    query: str,
    length: int | None,
    events: list[dict[str, Any]],
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> int:
    """A request straight to the ASGI app with these body events (then a disconnect), whatever ``length``
    says (None: no ``Content-Length``, as a chunked body comes)."""
    headers = [
        (b"host", b"testserver"),
        (b"authorization", f"Bearer {gateway.token}".encode()),
        (b"content-type", b"application/json"),
        *([] if length is None else [(b"content-length", str(length).encode())]),
        *extra,
    ]
    scope = {**http_scope("POST", f"/v1/subjects/{ASTRID}/decisions", headers, query), "state": {}}
    pending = list(events)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gateway.client.app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start"
    return int(sent[0]["status"])


_QUERIES = (f"purpose={PURPOSE}", f"purpose={PURPOSE}&")


async def test_a_body_past_the_bound_is_a_413_whatever_its_length_announced(gateway: Gateway) -> None:
    events = _events(b'{"candidates": [', b" " * DECISION_BODY_BYTES, b"]}")
    assert [await _raw_post(gateway, query, 2, events) for query in _QUERIES] == [413, 413]
    assert gateway.litestar_calls == [_routed(ASTRID, _QUERIES[1])]
    assert gateway.stub.reads == []
    # In chunks within the bound, a body reads the same on both paths.
    events = _events(BODY[:10], b"", BODY[10:20], BODY[20:])
    assert [await _raw_post(gateway, query, len(BODY), events) for query in _QUERIES] == [200, 200]
    first, second = gateway.stub.decided
    assert first == second
    assert first["candidates"] == [PRODUCT]
    assert len(gateway.litestar_calls) == 2


async def test_a_body_without_content_length_or_with_repeated_headers_goes_to_litestar(gateway: Gateway) -> None:
    assert await _raw_post(gateway, _QUERIES[0], None, _events(BODY[:10], BODY[10:])) == 200
    token = (b"authorization", f"Bearer {gateway.token}".encode())
    for repeated in (token, (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())):
        await _raw_post(gateway, _QUERIES[0], len(BODY), _events(BODY), (repeated,))
    assert gateway.litestar_calls == [_routed(ASTRID, _QUERIES[0])] * 4


async def test_a_client_gone_before_its_whole_body_came_is_answered_alike(gateway: Gateway) -> None:
    events = _events(b'{"candidates": [', complete=False)
    assert [await _raw_post(gateway, query, 100, events) for query in _QUERIES] == [500, 500]
    assert gateway.stub.reads == []


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", None, 400),
        (f"purpose={PURPOSE}&purpose={PURPOSE}", None, 400),
        (f"purpose={PURPOSE}&extra=1", None, 200),
        ("purpose=personalize%2Econtent.profiled", None, 200),
        ("purpose=Personalize.content.profiled", None, 400),
        (f"purpose={'p' * 101}", None, 400),
        (f"purpose={PURPOSE}", {"content-type": "text/plain"}, 415),
        (f"purpose={PURPOSE}", {"content-type": "application/json; charset=utf-8"}, 200),
        (f"purpose={PURPOSE}", {"content-type": "Application/JSON"}, 200),
        (f"purpose={PURPOSE}", {"content-type": "application/merge-patch+json"}, 200),
        (f"purpose={PURPOSE}", {}, 415),
    ],
)
async def test_anything_but_the_common_form_goes_to_the_route(
    gateway: Gateway, query: str, headers: dict[str, str] | None, status: int
) -> None:
    response = await gateway.decide(ASTRID, query, headers=headers)
    assert gateway.litestar_calls == [_routed(ASTRID, query)]
    assert response.status_code == status, response.text


async def test_other_paths_methods_lengths_and_hosts_go_to_litestar(gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {gateway.token}"}
    post = {**auth, "content-type": "application/json"}
    query = f"?purpose={PURPOSE}"
    client = gateway.client
    statuses = [
        (await client.post(f"{path}{query}", content=BODY, headers=post)).status_code
        for path in (
            f"/v1/subjects/{ASTRID}/decisions/",
            f"/v1/subjects/{'a' * 65}/decisions",
            "/v1/subjects/-a/decisions",
        )
    ]
    statuses.append((await client.get(f"/v1/subjects/{ASTRID}/decisions{query}", headers=auth)).status_code)
    statuses.append(
        (
            await client.post(
                f"/v1/subjects/{ASTRID}/decisions{query}", content=BODY, headers={**post, "Host": "exa mple"}
            )
        ).status_code
    )

    too_long = b'{"candidates": [' + b" " * DECISION_BODY_BYTES + b"]}"
    statuses.append(
        (await client.post(f"/v1/subjects/{ASTRID}/decisions{query}", content=too_long, headers=post)).status_code
    )
    assert len(gateway.litestar_calls) == 6, gateway.litestar_calls
    assert statuses == [200, 400, 400, 200, 400, 413]
