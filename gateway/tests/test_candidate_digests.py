"""A decision's candidate list goes to the rules service by its SHA-256 once that service holds it.

The real gateway app and the real rules app, in process: the gateway's own ``Upstream`` decides,
its HTTP/1.1 pool replaced by one that hands each request to the rules app (the release's reads
come from the shared stub). What the rules service received is recorded at its ASGI door.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from bench.decisions import candidates, definitions
from gateway.app import create_app
from gateway.decisions import DecisionContext
from gateway.tests.fast_paths import ASTRID, PURPOSE, StubUpstream, access_token, audit_rows
from gateway.upstream import HeldLists, Upstream
from services.rules.app import create_app as create_rules_app
from services.rules.selection import CandidateCache, Candidates
from services.rules.service import current_engine
from tillit.settings import Settings

pytestmark = pytest.mark.anyio


class _Batch(msgspec.Struct):
    decisions: list[msgspec.Raw]


@dataclass
class RulesDoor:
    """The rules app as the gateway's HTTP/1.1 pool reaches it, recording each decision body it
    received: a ``POST /v1/decide`` body, or each item of a ``POST /v1/decide/batch``."""

    client: AsyncTestClient[Litestar]
    received: list[bytes] = field(default_factory=list)
    batched: list[bool] = field(default_factory=list)
    """For each of ``received``: whether it came in a batch."""
    requests: int = 0
    """HTTP requests that carried them."""

    def record(self, path: str, body: bytes) -> None:
        items = (
            [bytes(item) for item in msgspec.json.decode(body, type=_Batch).decisions] if "batch" in path else [body]
        )
        self.requests += 1
        self.received.extend(items)
        self.batched.extend(["batch" in path] * len(items))

    def clear(self) -> None:
        self.received.clear()
        self.batched.clear()
        self.requests = 0

    async def request(
        self, method: str, base: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, bytes]:
        answer = await self.client.request(method, target, headers=headers, content=body)
        return answer.status_code, answer.content

    async def close(self) -> None:
        pass

    def decisions(self) -> list[dict[str, Any]]:
        """The decision bodies received, decoded, oldest first."""
        return [msgspec.json.decode(body) for body in self.received]


@dataclass
class Platform:
    gateway: AsyncTestClient[Litestar]
    rules: RulesDoor
    upstream: Upstream
    token: str

    async def decide(self, body: bytes) -> Any:
        return await self.gateway.post(
            f"/v1/subjects/{ASTRID}/decisions?purpose={PURPOSE}",
            content=body,
            headers={"content-type": "application/json", "Authorization": f"Bearer {self.token}"},
        )

    @property
    def tables(self) -> Any:
        return self.rules.client.app.state.engine.candidate_tables


@pytest.fixture
async def platform(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Platform]:
    monkeypatch.setenv("TILLIT_RULES_DEFINITIONS_DIR", "")
    async with AsyncTestClient(app=create_rules_app()) as rules_client, AsyncTestClient(app=create_app()) as client:
        upstream: Upstream = client.app.state.upstream
        for body in definitions():
            saved = await rules_client.post("/v1/definitions", json=body, headers=upstream._issuer.headers_for("rules"))
            assert saved.status_code == 201, saved.text
        await current_engine(rules_client.app.state)  # compiled now: no later compile drops the tables
        door = RulesDoor(rules_client)
        rules_app = rules_client.app.asgi_handler

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] not in ("/v1/decide", "/v1/decide/batch"):
                await rules_app(scope, receive, send)
                return
            chunks: list[bytes] = []

            async def receiving() -> Any:
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        door.record(scope["path"], b"".join(chunks))
                return message

            await rules_app(scope, receiving, send)

        rules_client.app.asgi_handler = recorded
        await upstream._plain.close()
        upstream._plain = door  # type: ignore[assignment]
        upstream.release_reads = StubUpstream().release_reads  # type: ignore[method-assign]
        token = await access_token(client, settings, ["decisions:read"])
        yield Platform(client, door, upstream, token)


def _body(products: list[dict[str, Any]], *, spaced: bool = False) -> tuple[bytes, bytes]:
    """A decision body, and its candidates' JSON exactly as it appears in it."""
    sent = msgspec.json.encode(products)
    if spaced:
        sent = msgspec.json.format(sent, indent=2)
    body = b'{"context": {"page": "home", "visit_count": 2}, "slots": ["home.hero"], "limit": 24, "candidates": '
    return body + sent + b"}", sent


def _answer(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer = dict(response.json())
    answer.pop("release_id")
    return answer


async def test_the_same_list_goes_as_its_digest_alone_once_the_rules_service_holds_it(platform: Platform) -> None:
    products = candidates(random.Random(5))  # noqa: S311 - reproducible test data
    body, sent = _body(products, spaced=True)  # the caller's bytes, whitespace and all
    digest = hashlib.sha256(sent).hexdigest()
    answers = [_answer(await platform.decide(body)) for _ in range(3)]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["products"]
    assert "candidates_held" not in answers[0]
    first, second, third = platform.rules.decisions()
    assert first["candidates"] == products
    assert first["candidates_digest"] == digest
    assert platform.rules.received[0].count(sent) == 1  # the caller's very bytes, which the digest is of
    for alone in (second, third):
        assert "candidates" not in alone
        assert alone["candidates_digest"] == digest
        assert {k: v for k, v in alone.items() if k != "candidates_digest"} == {
            k: v for k, v in first.items() if k not in ("candidates", "candidates_digest")
        }
    assert len(platform.rules.received[1]) < 1024 < 20_000 < len(platform.rules.received[0])
    assert await audit_rows(platform.gateway, ASTRID) == [(PURPOSE, "released")] * 3
    assert "subject" not in repr(platform.tables._tables)  # digests and product tables only


async def test_a_rules_service_that_lost_its_tables_gets_the_list_again_and_the_answer_is_the_same(
    platform: Platform,
) -> None:
    body, sent = _body(candidates(random.Random(6)))  # noqa: S311 - reproducible test data
    expected = _answer(await platform.decide(body))
    assert "candidates" in platform.rules.decisions()[-1]
    assert _answer(await platform.decide(body)) == expected
    assert "candidates" not in platform.rules.decisions()[-1]  # held: the digest alone
    for lose in ("cleared", "restarted"):
        if lose == "cleared":
            platform.tables.clear()  # as a definition change drops them
        else:  # a new process (or another replica behind the same URL): nothing held, nothing counted
            engine = platform.rules.client.app.state.engine
            engine.candidate_tables = CandidateCache()
        platform.rules.clear()
        assert _answer(await platform.decide(body)) == expected
        # The digest alone in a batch, left to POST /v1/decide (null); then the list there: no more.
        batched, resent = platform.rules.decisions()
        assert platform.rules.batched == [True, False]
        assert "candidates" not in batched
        assert msgspec.json.encode(resent["candidates"]) == sent
        assert resent["candidates_digest"] == batched["candidates_digest"] == hashlib.sha256(sent).hexdigest()
        platform.rules.clear()
        assert _answer(await platform.decide(body)) == expected
        [alone] = platform.rules.decisions()  # held again: the digest alone
        assert platform.rules.batched == [True]
        assert "candidates" not in alone
    assert await audit_rows(platform.gateway, ASTRID) == [(PURPOSE, "released")] * 6


async def test_decisions_in_flight_together_share_rules_requests_and_get_their_own_answers(
    platform: Platform,
) -> None:
    _, sent = _body(candidates(random.Random(10)))  # noqa: S311 - reproducible test data
    requests = [
        {
            "purpose": PURPOSE,
            "profile": {"favourite_brands": [brand], "clothing_size": "M"},
            "context": DecisionContext(page="home", visit_count=visits, slots=["home.hero"]),
            "assignment_key": f"{visits:032x}",
            "candidates": msgspec.Raw(sent),
        }
        for visits, brand in enumerate(["Gucci", "Hope", "Arket", "Ganni", "Gucci", "Hope"], start=1)
    ]
    alone = [await platform.upstream.decide(request) for request in requests]  # the first sends the list
    assert len({msgspec.json.encode(answer) for answer in alone}) > 1  # the profiles make a difference
    platform.rules.clear()
    together = await asyncio.gather(*(platform.upstream.decide(request) for request in requests))
    assert together == alone  # each its own answer
    assert platform.rules.batched == [True] * 6  # the digest alone, in POST /v1/decide/batch
    assert platform.rules.requests == 1  # in flight together: one request


async def test_a_list_the_rules_service_does_not_keep_goes_whole_every_time(platform: Platform) -> None:
    tables = platform.tables
    for number in range(64):  # the rules service's cache full of lists seen more often than the next
        for _ in range(3):
            tables.put(f"{number:064x}", Candidates([]), 10)
    body, _ = _body(candidates(random.Random(7)))  # noqa: S311 - reproducible test data
    for _ in range(2):
        _answer(await platform.decide(body))
    assert all("candidates" in sent for sent in platform.rules.decisions())
    assert len(platform.upstream._held_lists) == 0


async def test_a_refused_candidate_is_still_the_callers_400_naming_it(platform: Platform) -> None:
    products = candidates(random.Random(8))  # noqa: S311 - reproducible test data
    products[3]["price"] = "cheap"
    body, _ = _body(products)
    for _ in range(2):
        refused = await platform.decide(body)
        assert refused.status_code == 400, refused.text
        problem = refused.json()
        assert problem["type"] == "urn:tillit:problem:validation"
        assert problem["detail"].endswith("at `$.candidates[3].price`")
    assert all("candidates" in sent for sent in platform.rules.decisions())  # never held: always the list
    assert await audit_rows(platform.gateway, ASTRID) == []


async def test_any_other_failure_of_a_digest_alone_is_not_retried(platform: Platform) -> None:
    body, _ = _body(candidates(random.Random(9)))  # noqa: S311 - reproducible test data
    _answer(await platform.decide(body))
    rules_app = platform.rules.client.app
    handler = rules_app.asgi_handler

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            platform.rules.received.append(b"{}")
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await handler(scope, receive, send)

    rules_app.asgi_handler = failing
    platform.rules.clear()
    try:
        down = await platform.decide(body)
    finally:
        rules_app.asgi_handler = handler
    assert down.status_code == 503
    assert down.json()["type"] == "urn:tillit:problem:rules-unavailable"
    assert len(platform.rules.received) == 1


def test_held_lists_are_bounded_and_most_recently_used_first() -> None:
    held = HeldLists(entries=2)
    for digest in ("a", "b"):
        held.remember(digest)
    assert held.held("a")  # now the most recently used
    held.remember("c")
    assert not held.held("b")
    assert held.held("a")
    assert held.held("c")
    held.forget("a")
    assert not held.held("a")
    assert len(held) == 1
