"""The single release's fast path (gateway.fast_release) against Litestar's route, on the real gateway app.

The same request is sent in its common form (answered by the fast path) and with a trailing ``&``
(which the fast path leaves to Litestar's route, and Litestar reads as the same query): the answers
must be the same in status, headers and body, errors included, and both must leave their audit row.
Requests outside the common form must reach Litestar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.fast_release import FastRelease
from gateway.ratelimit import RateLimiter
from gateway.tests.fast_paths import ASTRID, PURPOSE, StubUpstream, access_token, audit_rows, same_answer
from tillit.problems import NotFound, Unavailable
from tillit.settings import Settings

pytestmark = pytest.mark.anyio


@dataclass
class Gateway:
    client: AsyncTestClient[Litestar]
    stub: StubUpstream
    token: str
    litestar_calls: list[str]

    async def release(self, subject_id: str, query: str, *, token: str | None = None) -> httpx.Response:
        headers = {} if token == "" else {"Authorization": f"Bearer {token or self.token}"}
        return await self.client.get(f"/v1/subjects/{subject_id}/profile?{query}", headers=headers)

    async def audit_rows(self, subject_id: str) -> list[tuple[str, str]]:
        return await audit_rows(self.client, subject_id)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    stub = StubUpstream()
    async with AsyncTestClient(app=create_app()) as client:
        client.app.state.upstream = stub
        fast = client.app.asgi_handler
        assert isinstance(fast, FastRelease)
        litestar_calls: list[str] = []
        litestar = fast._fallback

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                litestar_calls.append(f"{scope['path']}?{scope['query_string'].decode()}")
            await litestar(scope, receive, send)

        fast._fallback = recorded
        token = await access_token(client, settings, ["profiles:read"])
        litestar_calls.clear()
        yield Gateway(client, stub, token, litestar_calls)


async def test_the_common_release_takes_the_fast_path_and_answers_as_the_route_does(gateway: Gateway) -> None:
    fast = await gateway.release(ASTRID, f"purpose={PURPOSE}")
    assert gateway.litestar_calls == []
    routed = await gateway.release(ASTRID, f"purpose={PURPOSE}&")
    assert gateway.litestar_calls == [f"/v1/subjects/{ASTRID}/profile?purpose={PURPOSE}&"]

    same_answer(fast, routed)
    assert fast.headers["content-type"] == "application/json"
    assert fast.json()["fields"] == {"sizes": {"tops": "M"}}
    assert {"field": "email", "reason": "category_not_permitted"} in fast.json()["withheld"]
    assert await gateway.audit_rows(ASTRID) == [(PURPOSE, "released"), (PURPOSE, "released")]


@pytest.mark.parametrize(
    ("subject_id", "purpose", "token", "failure", "status", "audited"),
    [
        ("shopper-bo", PURPOSE, "", None, 401, []),
        ("shopper-bo", PURPOSE, "not-a-token", None, 401, []),
        ("shopper-bo", "marketing.communications.email", None, None, 403, ["refused", "refused"]),
        ("shopper-bo", "no.such.purpose", None, None, 422, []),
        ("shopper-bo", PURPOSE, None, NotFound("no profile is held", slug="profile-not-found"), 404, []),
        ("shopper-bo", PURPOSE, None, Unavailable("the consent service cannot be reached", slug="x"), 503, []),
        ("shopper-bo", PURPOSE, None, RuntimeError("a bug"), 500, []),
    ],
)
async def test_errors_on_the_fast_path_are_the_routes_problem_documents(
    gateway: Gateway,
    subject_id: str,
    purpose: str,
    token: str | None,
    failure: Exception | None,
    status: int,
    audited: list[str],
) -> None:
    if failure is not None:
        gateway.stub.failures[subject_id] = failure
    fast = await gateway.release(subject_id, f"purpose={purpose}", token=token)
    assert gateway.litestar_calls == []
    routed = await gateway.release(subject_id, f"purpose={purpose}&", token=token)
    assert len(gateway.litestar_calls) == 1

    same_answer(fast, routed)
    assert fast.status_code == status
    assert fast.headers["content-type"] == "application/problem+json"
    assert fast.json()["status"] == status
    assert fast.json()["instance"] == f"/v1/subjects/{subject_id}/profile"
    if status == 401:
        assert fast.headers["www-authenticate"] == 'Bearer realm="tillit"'
    assert [outcome for _, outcome in await gateway.audit_rows(subject_id)] == audited


async def test_the_rate_limit_holds_on_the_fast_path(gateway: Gateway) -> None:
    gateway.client.app.state.rate_limiter = RateLimiter(scale=1e-6, clock=lambda: 0.0)
    assert (await gateway.release(ASTRID, f"purpose={PURPOSE}")).status_code == 200
    fast = await gateway.release(ASTRID, f"purpose={PURPOSE}")
    routed = await gateway.release(ASTRID, f"purpose={PURPOSE}&")
    same_answer(fast, routed)
    assert fast.status_code == 429
    assert fast.headers["retry-after"]
    assert gateway.stub.reads == [(ASTRID, PURPOSE)]
    assert gateway.litestar_calls == [f"/v1/subjects/{ASTRID}/profile?purpose={PURPOSE}&"]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "purpose=",
        f"purpose={PURPOSE}&purpose={PURPOSE}",
        f"purpose={PURPOSE}&extra=1",
        "purpose=personalize%2Econtent.profiled",
        "purpose=Personalize.content.profiled",
        f"purpose={'p' * 101}",
        f"Purpose={PURPOSE}",
    ],
)
async def test_anything_but_the_common_form_goes_to_the_route(gateway: Gateway, query: str) -> None:
    response = await gateway.release(ASTRID, query)
    assert gateway.litestar_calls == [f"/v1/subjects/{ASTRID}/profile?{query}"]
    if query in ("purpose=personalize%2Econtent.profiled", f"purpose={PURPOSE}&extra=1"):
        assert response.status_code == 200  # the route decodes escapes and ignores unknown parameters
    else:
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"


async def test_other_paths_methods_and_hosts_go_to_litestar(gateway: Gateway) -> None:
    auth = {"Authorization": f"Bearer {gateway.token}"}
    statuses = [
        (await gateway.client.get(f"{path}?purpose={PURPOSE}", headers=auth)).status_code
        for path in (f"/v1/subjects/{ASTRID}/profile/", f"/v1/subjects/{'a' * 65}/profile", "/v1/subjects/-a/profile")
    ]
    statuses.append((await gateway.client.head(f"/v1/subjects/{ASTRID}/profile?purpose={PURPOSE}")).status_code)
    bad_host = {**auth, "Host": "exa mple"}
    statuses.append(
        (await gateway.client.get(f"/v1/subjects/{ASTRID}/profile?purpose={PURPOSE}", headers=bad_host)).status_code
    )
    assert len(gateway.litestar_calls) == 5
    assert statuses == [200, 400, 400, 405, 400]
    assert gateway.stub.reads == [(ASTRID, PURPOSE)]
