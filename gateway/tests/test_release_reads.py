"""The release's batched reads through :class:`gateway.upstream.Upstream`, against stub services over HTTP.

Every way a batch call can fail (unreachable, timeout, 5xx, 4xx, an answer that does not decode)
fails each release in it with 503 and its service's slug; a subject the profile batch leaves out is
404 profile-not-found; a consent failure outranks a missing profile.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from gateway.upstream import Upstream
from tillit.http1 import UpstreamTransportError
from tillit.keys import SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
from tillit.problems import TillitError
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import load_settings

pytestmark = pytest.mark.anyio

PURPOSE = "personalize.content.profiled"
GIVEN = {
    "purpose": PURPOSE,
    "status": "given",
    "active": True,
    "since": "2026-03-01T12:00:00Z",
    "event_id": "e-1",
    "notice_version": 1,
    "expires_at": None,
    "needs_reconsent": False,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Services:
    """Stub consent and preferences services: the answers are set per test; every batch is kept."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {"astrid": {**GIVEN, "subject_id": "astrid"}}
        self.profiles: dict[str, dict[str, Any]] = {"astrid": {"first_name": "Astrid"}, "bo": {"first_name": "Bo"}}
        self.consent_answer: Handler | None = None
        self.profile_answer: Handler | None = None
        self.batches: list[tuple[str, list[str]]] = []

    async def purpose_states(self, request: web.Request) -> web.StreamResponse:
        subject_ids = (await request.json())["subject_ids"]
        self.batches.append((request.path, subject_ids))
        if self.consent_answer is not None:
            return await self.consent_answer(request)
        states = [self.states[s] for s in sorted(subject_ids) if s in self.states]
        return web.json_response({"purpose": request.match_info["purpose"], "as_of": GIVEN["since"], "states": states})

    async def profile_batch(self, request: web.Request) -> web.StreamResponse:
        subject_ids = (await request.json())["subject_ids"]
        self.batches.append((request.path, subject_ids))
        if self.profile_answer is not None:
            return await self.profile_answer(request)
        found = [{"subject_id": s, "fields": self.profiles[s]} for s in sorted(subject_ids) if s in self.profiles]
        return web.json_response({"profiles": found})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def services() -> AsyncIterator[tuple[Services, str]]:
    stub = Services()
    app = web.Application()
    app.router.add_post("/v1/purposes/{purpose}/states", stub.purpose_states)
    app.router.add_post("/v1/profiles/batch", stub.profile_batch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield stub, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def upstream(services: tuple[Services, str], tmp_path: Path) -> AsyncIterator[Upstream]:
    settings = load_settings("gateway", {"TILLIT_DATA_DIR": str(tmp_path)})
    _, url = services
    settings = msgspec.structs.replace(
        settings, urls={**settings.urls, "consent": url, "preferences": url}, upstream_timeout=0.5
    )
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    client = Upstream(settings, ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY)))
    try:
        yield client
    finally:
        await client.close()


async def reads(upstream: Upstream, *subjects: str) -> list[Any]:
    return await asyncio.gather(*(upstream.release_reads(s, PURPOSE) for s in subjects), return_exceptions=True)


def problem(outcome: Any) -> tuple[int, str]:
    assert isinstance(outcome, TillitError), outcome
    return outcome.status_code, outcome.slug


async def test_releases_at_once_read_in_one_batch_per_service(
    services: tuple[Services, str], upstream: Upstream
) -> None:
    stub, _ = services
    astrid, bo, again = await reads(upstream, "astrid", "bo", "astrid")
    consent, profile = astrid
    assert consent is not None
    assert (consent.status, consent.active, consent.event_id, consent.needs_reconsent) == ("given", True, "e-1", False)
    assert profile.fields == {"first_name": "Astrid"}
    assert bo[0] is None  # no consent state held: the release rule withholds as "no_consent"
    assert bo[1].fields == {"first_name": "Bo"}
    assert again == astrid
    assert sorted(stub.batches) == [
        ("/v1/profiles/batch", ["astrid", "bo"]),
        (f"/v1/purposes/{PURPOSE}/states", ["astrid", "bo"]),
    ]


async def test_a_subject_the_profile_batch_leaves_out_is_404_and_the_others_are_released(
    services: tuple[Services, str], upstream: Upstream
) -> None:
    outcomes = await reads(upstream, "astrid", "nobody")
    assert outcomes[0][1].fields == {"first_name": "Astrid"}
    assert problem(outcomes[1]) == (404, "profile-not-found")


async def _server_error(_: web.Request) -> web.StreamResponse:
    return web.Response(status=500)


async def _undecodable(_: web.Request) -> web.StreamResponse:
    return web.Response(status=200, body=b'{"states": "not a list"}', content_type="application/json")


async def _refused(_: web.Request) -> web.StreamResponse:
    return web.json_response({"title": "Unprocessable", "detail": "no such purpose"}, status=422)


async def _not_found(_: web.Request) -> web.StreamResponse:
    return web.json_response({"title": "Not found"}, status=404)


async def _too_slow(_: web.Request) -> web.StreamResponse:
    await asyncio.sleep(1.5)
    return web.Response(status=200)


FAILURES = [_server_error, _undecodable, _refused, _not_found, _too_slow]


@pytest.mark.parametrize("answer", FAILURES, ids=lambda answer: answer.__name__.strip("_"))
async def test_a_failed_consent_batch_is_503_for_every_release_in_it_and_outranks_a_missing_profile(
    services: tuple[Services, str], upstream: Upstream, answer: Handler
) -> None:
    stub, _ = services
    stub.consent_answer = answer
    outcomes = await reads(upstream, "astrid", "bo", "nobody")
    assert [problem(outcome) for outcome in outcomes] == [(503, "consent-unavailable")] * 3
    assert len({id(outcome) for outcome in outcomes}) == 3


@pytest.mark.parametrize("answer", FAILURES, ids=lambda answer: answer.__name__.strip("_"))
async def test_a_failed_profile_batch_is_503_for_every_release_in_it(
    services: tuple[Services, str], upstream: Upstream, answer: Handler
) -> None:
    stub, _ = services
    stub.profile_answer = answer
    outcomes = await reads(upstream, "astrid", "bo", "nobody")
    assert [problem(outcome) for outcome in outcomes] == [(503, "preferences-unavailable")] * 3


async def test_an_unreachable_service_is_503(tmp_path: Path) -> None:
    settings = load_settings("gateway", {"TILLIT_DATA_DIR": str(tmp_path)})
    closed = f"http://127.0.0.1:{_free_port()}"
    settings = msgspec.structs.replace(settings, urls={**settings.urls, "consent": closed, "preferences": closed})
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    upstream = Upstream(settings, ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY)))
    try:
        outcomes = await reads(upstream, "astrid", "bo")
    finally:
        await upstream.close()
    assert [problem(outcome) for outcome in outcomes] == [(503, "consent-unavailable")] * 2


async def test_after_a_failed_batch_the_next_releases_are_read_again(
    services: tuple[Services, str], upstream: Upstream
) -> None:
    stub, _ = services
    stub.consent_answer = _server_error
    assert problem((await reads(upstream, "astrid"))[0]) == (503, "consent-unavailable")
    stub.consent_answer = None
    [(consent, profile)] = await reads(upstream, "astrid")
    assert consent is not None
    assert consent.status == "given"
    assert profile.fields == {"first_name": "Astrid"}


async def test_a_batch_read_that_loses_its_connection_is_tried_once_more(
    services: tuple[Services, str], upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive connection the service closed while idle: a read may be sent again, as a GET is."""
    real = upstream._plain.request
    lost: list[str] = []

    async def first_connection_lost(
        method: str, base: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        if target not in lost:
            lost.append(target)
            raise UpstreamTransportError("connection closed by the service")
        return await real(method, base, target, headers, body)

    monkeypatch.setattr(upstream._plain, "request", first_connection_lost)
    [(consent, profile)] = await reads(upstream, "astrid")
    assert consent is not None
    assert consent.status == "given"
    assert profile.fields == {"first_name": "Astrid"}
    assert sorted(lost) == ["/v1/profiles/batch", f"/v1/purposes/{PURPOSE}/states"]


async def test_a_batch_read_that_times_out_is_not_sent_again(
    services: tuple[Services, str], upstream: Upstream
) -> None:
    stub, _ = services
    stub.consent_answer = _too_slow
    outcomes = await reads(upstream, "astrid")
    assert problem(outcomes[0]) == (503, "consent-unavailable")
    assert [path for path, _ in stub.batches].count(f"/v1/purposes/{PURPOSE}/states") == 1
