"""The services' batch reads on :mod:`tillit.fast_path` against Litestar's routes, on the real apps.

Each request is sent in its common form (answered by the fast path) and with a bare ``&`` as its
query (which the fast path leaves to Litestar's route, and Litestar reads as no query): the answers
must be the same in status, headers and body, for good input and for each kind of bad input.
Requests outside the common form must reach Litestar, and answer as it always did.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from services.consent import service as consent_service
from services.consent.app import create_app as create_consent
from services.consent.repository import ConsentRepository
from services.preferences import service as preferences_service
from services.preferences.app import create_app as create_preferences
from services.preferences.repository import ProfileRepository
from tillit.db import Database
from tillit.fast_path import FastBatchReads
from tillit.keys import SERVICE_TOKEN_KEY, load_private_key
from tillit.problems import PROBLEM_MEDIA_TYPE
from tillit.service_tokens import ServiceTokenIssuer
from tillit.testing import BACKENDS, POSTGRES_URL, fresh_component_environment, http_scope, require_postgres

pytestmark = pytest.mark.anyio

PROFILED = "personalize.content.profiled"
EMAIL = "marketing.communications.email"
STATES = f"/v1/purposes/{PROFILED}/states"
PROFILES = "/v1/profiles/batch"
JSON = {"Content-Type": "application/json"}


@dataclass
class Service:
    client: AsyncTestClient[Litestar]
    issuer: ServiceTokenIssuer
    name: str
    litestar_calls: list[str]

    def auth(self, audience: str | None = None) -> dict[str, str]:
        return self.issuer.headers_for(audience or self.name)

    async def post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None, query: str = ""
    ) -> httpx.Response:
        headers = {**JSON, **self.auth(), **(headers or {})}
        headers = {name: value for name, value in headers.items() if value}
        return await self.client.post(f"{path}?{query}" if query else path, content=body, headers=headers)

    async def both(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """The request on the fast path, then on Litestar's route: the same answer; the fast one."""
        self.litestar_calls.clear()
        fast = await self.post(path, body, headers)
        assert self.litestar_calls == [], "the common form went to Litestar"
        routed = await self.post(path, body, headers, query="&")
        assert self.litestar_calls == [path], "the form with a query did not go to Litestar"
        _same_answer(fast, routed)
        return fast


def _same_answer(fast: httpx.Response, routed: httpx.Response) -> None:
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    fast_body, routed_body = fast.json(), routed.json()
    fast_headers, routed_headers = dict(fast.headers), dict(routed.headers)
    if "as_of" in fast_body:  # the consent state's clock: read for each request
        assert fast_body.pop("as_of") <= routed_body.pop("as_of")
        for response, headers in ((fast, fast_headers), (routed, routed_headers)):
            assert int(headers.pop("content-length")) == len(response.content)
    assert fast_headers == routed_headers
    assert fast_body == routed_body


@pytest.fixture(params=BACKENDS)
def environment(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """A fresh data directory and keys; on PostgreSQL the services' schemas under a fresh prefix."""
    fresh_component_environment(tmp_path, monkeypatch)
    if request.param == "sqlite":
        return None
    require_postgres()
    prefix = f"unit_{secrets.token_hex(6)}_"
    monkeypatch.setenv("TILLIT_DATABASE_URL", POSTGRES_URL)
    monkeypatch.setenv("TILLIT_DATABASE_SCHEMA_PREFIX", prefix)
    return prefix


@asynccontextmanager
async def _running(name: str, create: Callable[[], Litestar], prefix: str | None) -> AsyncIterator[Service]:
    """The real service app, its Litestar route recording the requests that reach it."""
    app = create()
    try:
        async with AsyncTestClient(app=app) as client:
            fast = app.asgi_handler
            assert isinstance(fast, FastBatchReads)
            calls: list[str] = []
            litestar = fast._fallback

            async def recorded(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http":
                    calls.append(scope["path"])
                await litestar(scope, receive, send)

            fast._fallback = recorded
            issuer = ServiceTokenIssuer(load_private_key(app.state.settings.keys_dir, SERVICE_TOKEN_KEY))
            yield Service(client, issuer, name, calls)
    finally:
        if prefix is not None:
            database = Database(POSTGRES_URL)
            async with database.engine.begin() as connection:
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}{name}" CASCADE'))
            await database.dispose()


@pytest.fixture
async def consent(environment: str | None) -> AsyncIterator[Service]:
    async with _running("consent", create_consent, environment) as service:
        for subject, purpose, action in [
            ("astrid", PROFILED, "give"),
            ("bo", PROFILED, "give"),
            ("bo", PROFILED, "withdraw"),
            ("cecilia", PROFILED, "refuse"),
            ("astrid", EMAIL, "give"),
        ]:
            event = {"purpose": purpose, "action": action, "source": "preference_page"}
            answer = await service.client.post(f"/v1/subjects/{subject}/events", json=event, headers=service.auth())
            assert answer.status_code == 201, answer.text
        yield service


@pytest.fixture
async def preferences(environment: str | None) -> AsyncIterator[Service]:
    async with _running("preferences", create_preferences, environment) as service:
        for subject, fields in [
            ("astrid", {"first_name": "Åsa", "sizes": {"tops": "M"}, "shoe_size": 38.5}),
            ("bo", {"email": "bo@example.com", "favourite_brands": ["Acne Studios"]}),
        ]:
            patch = {"fields": fields, "source": "import"}
            answer = await service.client.patch(f"/v1/subjects/{subject}/profile", json=patch, headers=service.auth())
            assert answer.status_code == 200, answer.text
        yield service


def _ids(*subject_ids: Any) -> bytes:
    return msgspec.json.encode({"subject_ids": list(subject_ids)})


BAD_BODIES: list[tuple[bytes, str]] = [
    (_ids(*(f"s{n}" for n in range(5001))), "too many ids"),
    (_ids("astrid", "-astrid"), "an id outside the pattern"),
    (_ids("a" * 65), "an id too long"),
    (_ids(""), "an empty id"),
    (_ids("astrid", 7), "an id that is a number"),
    (b'{"subject_ids": "astrid"}', "a string for the list"),
    (b'{"subject_ids": null}', "null for the list"),
    (b"{}", "no list"),
    (b'{"subject_ids": [], "purpose": "x"}', "an unknown member"),
    (b'{"subject_ids": ["astrid"], "subject_ids": ["bo"]}', "a duplicate key"),
    (b'["astrid"]', "a list for the object"),
    (b"null", "null for the object"),
    (b"", "an empty body"),
    (b'{"subject_ids": ["astrid"]', "a truncated document"),
    (b'{"subject_ids": ["astrid"]} x', "trailing garbage"),
    (b"[" * 5000 + b"]" * 5000, "a document nesting too deep"),
    (b'{"subject_ids": ["\\ud800"]}', "a lone surrogate"),
    (b'{"subject_ids": ["astr\xffid"]}', "bytes that are not UTF-8"),
]
"""Bodies within the size limit that the handler's schema refuses (or, for the duplicate key,
reads as its decoder does): each must be answered the same on both paths."""


@pytest.mark.parametrize(
    ("body", "purpose"),
    [
        (_ids("astrid", "bo", "nobody"), PROFILED),
        (_ids("cecilia", "astrid", "astrid"), PROFILED),
        (_ids(), PROFILED),
        (_ids("astrid", "bo"), EMAIL),
        (_ids(*(f"s{n}" for n in range(4999)), "bo"), PROFILED),
    ],
)
async def test_consent_states_take_the_fast_path_and_answer_as_the_route_does(
    consent: Service, body: bytes, purpose: str
) -> None:
    answer = await consent.both(f"/v1/purposes/{purpose}/states", body)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    states = {state["subject_id"]: state["status"] for state in answer.json()["states"]}
    asked = set(msgspec.json.decode(body)["subject_ids"])
    expected = {"astrid": "given", "bo": "withdrawn", "cecilia": "refused"} if purpose == PROFILED else {}
    if purpose == EMAIL:
        expected = {"astrid": "pending"}
    assert states == {subject: status for subject, status in expected.items() if subject in asked}


@pytest.mark.parametrize(
    "body", [(_ids("astrid", "bo", "nobody")), _ids(), _ids(*(f"s{n}" for n in range(4999)), "bo")]
)
async def test_profile_batches_take_the_fast_path_and_answer_as_the_route_does(
    preferences: Service, body: bytes
) -> None:
    answer = await preferences.both(PROFILES, body)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert [profile["subject_id"] for profile in answer.json()["profiles"]] == (
        ["bo"] if len(body) > 1000 else ["astrid", "bo"] if b"astrid" in body else []
    )


def _problem(answer: httpx.Response, status: int, path: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem: dict[str, Any] = answer.json()
    assert problem["status"] == status
    assert problem["instance"] == path
    return problem


def _unauthorized(service: Service) -> list[dict[str, str]]:
    return [
        {"Authorization": ""},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic eDp5"},
        {"Authorization": "Bearer"},
        service.auth("preferences" if service.name == "consent" else "consent"),
        service.auth("gateway"),
    ]


async def test_tokens_are_checked_on_the_fast_path_as_by_the_route(consent: Service, preferences: Service) -> None:
    for service, path in ((consent, STATES), (preferences, PROFILES)):
        for headers in _unauthorized(service):
            answer = await service.both(path, _ids("astrid"), headers)
            problem = _problem(answer, 401, path)
            assert problem["type"] == "urn:tillit:problem:unauthorized"
            assert answer.headers["www-authenticate"] == 'Bearer realm="tillit"'
        # The token is checked before the body is read, as before_request does.
        assert (await service.both(path, b"not json", service.auth("rules"))).status_code == 401


@pytest.mark.parametrize(("body", "why"), BAD_BODIES, ids=[why for _, why in BAD_BODIES])
async def test_bad_bodies_are_the_routes_problem_documents(
    consent: Service, preferences: Service, body: bytes, why: str
) -> None:
    for service, path in ((consent, STATES), (preferences, PROFILES)):
        answer = await service.both(path, body)
        if why == "a duplicate key":
            assert answer.status_code in (200, 400), answer.text
            continue
        problem = _problem(answer, 400, path)
        assert problem["type"] == "urn:tillit:problem:validation", why
        assert problem["detail"].startswith("body"), problem


async def test_an_unknown_purpose_is_the_routes_422(consent: Service) -> None:
    path = "/v1/purposes/no.such.purpose/states"
    problem = _problem(await consent.both(path, _ids("astrid")), 422, path)
    assert "no.such.purpose" in problem["detail"]
    # A bad body is refused before the purpose is looked at, as on the route.
    assert (await consent.both(path, _ids("-astrid"))).status_code == 400


async def test_a_database_failure_is_the_routes_503_and_a_bug_its_500(
    consent: Service, preferences: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure: list[Exception] = []

    async def broken(*_args: Any) -> Any:
        raise failure[0]

    monkeypatch.setattr(ConsentRepository, "states_of", broken)
    monkeypatch.setattr(ProfileRepository, "profiles_of", broken)
    # On PostgreSQL both paths read without a repository (one statement on a bare connection).
    monkeypatch.setattr(consent_service, "purpose_state_rows", broken)
    monkeypatch.setattr(preferences_service, "profiles_of_subjects", broken)
    for service, path in ((consent, STATES), (preferences, PROFILES)):
        failure[:] = [OperationalError("SELECT", {}, ConnectionResetError("the database went away"))]
        answer = await service.both(path, _ids("astrid"))
        assert _problem(answer, 503, path)["type"] == "urn:tillit:problem:database-unavailable"
        assert answer.headers["retry-after"] == "1"
        failure[:] = [RuntimeError("a bug")]
        assert _problem(await service.both(path, _ids("astrid")), 500, path)["type"] == "urn:tillit:problem:internal"


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Content-Type": ""}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "application/json; charset=utf-8"}, 200),
        ({"Content-Type": "Application/JSON"}, 200),
        ({"Content-Type": "application/merge-patch+json"}, 200),
        ({"Host": "exa mple"}, 400),
    ],
)
async def test_other_headers_go_to_litestar(
    consent: Service, preferences: Service, change: dict[str, str], status: int
) -> None:
    for service, path in ((consent, STATES), (preferences, PROFILES)):
        service.litestar_calls.clear()
        answer = await service.post(path, _ids("astrid"), change)
        assert service.litestar_calls == [path]
        assert answer.status_code == status, answer.text


async def test_repeated_headers_go_to_litestar(consent: Service, preferences: Service) -> None:
    """Litestar's test client joins repeated headers into one: these are sent as ASGI messages."""
    for service, path in ((consent, STATES), (preferences, PROFILES)):
        good = service.auth()["Authorization"].encode()
        body = _ids("astrid")
        length = str(len(body)).encode()
        json = (b"content-type", b"application/json")
        cases: list[tuple[list[tuple[bytes, bytes]], int]] = [
            ([(b"authorization", good), (b"authorization", b"Bearer not-a-token"), json], 200),
            ([(b"authorization", b"Bearer not-a-token"), (b"authorization", good), json], 401),
            ([(b"authorization", good), json, (b"content-length", length)], 200),
            ([(b"authorization", good), (b"content-type", b"text/plain"), json], 415),
        ]
        for headers, status in cases:
            service.litestar_calls.clear()
            answer = await _asgi(service.client, path, [*headers, (b"content-length", length)], [body])
            assert service.litestar_calls == [path], headers
            assert answer[0] == status, (headers, answer)


async def _asgi(
    client: AsyncTestClient[Litestar], path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict[str, Any]]:
    """``POST path`` straight to the app as ASGI messages, on the client's event loop (the app's
    database connections belong to it): the status and the decoded answer."""
    scope = http_scope("POST", path, [(b"host", b"testserver"), *headers])
    received = [
        {"type": "http.request", "body": chunk, "more_body": number < len(chunks) - 1}
        for number, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return received.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await anyio.to_thread.run_sync(client.blocking_portal.call, client.app, scope, receive, send)
    return sent[0]["status"], msgspec.json.decode(sent[1]["body"])


async def test_other_paths_queries_methods_and_sizes_go_to_litestar(consent: Service, preferences: Service) -> None:
    too_big = _ids("astrid") + b" " * (1024 * 1024)
    long_purpose = "p" * 101
    cases: list[tuple[Service, str, str, bytes, str, int]] = [
        (consent, "POST", STATES, too_big, "", 413),
        (preferences, "POST", PROFILES, too_big, "", 413),
        (consent, "POST", f"/v1/purposes/{long_purpose}/states", _ids("astrid"), "", 400),
        (consent, "POST", "/v1/purposes/Personalize/states", _ids("astrid"), "", 400),
        (consent, "POST", STATES, _ids("astrid"), "limit=1", 200),
        (consent, "POST", STATES, _ids("astrid"), "a=1&a=2", 400),
        (preferences, "POST", PROFILES, _ids("astrid"), "a=1&a=2", 400),
        (consent, "GET", STATES, b"", "", 405),
        (preferences, "PUT", PROFILES, _ids("astrid"), "", 405),
        (preferences, "POST", "/v1/profiles/batches", _ids("astrid"), "", 404),
    ]
    for service, method, path, body, query, status in cases:
        service.litestar_calls.clear()
        headers = {**JSON, **service.auth()}
        answer = await service.client.request(method, f"{path}?{query}", content=body, headers=headers)
        assert service.litestar_calls == [path], (method, path, query)
        assert answer.status_code == status, (method, path, query, answer.text)
        assert answer.headers["content-type"] == PROBLEM_MEDIA_TYPE if status != 200 else True
    # With the purpose at its longest (100 characters), the path is still the fast one.
    purpose = "p" * 100
    path = f"/v1/purposes/{purpose}/states"
    assert _problem(await consent.both(path, _ids("astrid")), 422, path)["type"].endswith("unknown-purpose")


async def test_a_body_longer_than_announced_goes_to_litestar_whole(consent: Service) -> None:
    """The server bounds a body by its Content-Length; if one did not, Litestar would still see it
    all and refuse it, as before."""
    token = consent.auth()["Authorization"].encode()
    chunks = [b'{"subject_ids": ["astrid"]}', b" " * (1024 * 1024)]
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(chunks[0])).encode()),
        (b"authorization", token),
    ]
    consent.litestar_calls.clear()
    status, problem = await _asgi(consent.client, STATES, headers, chunks)
    assert consent.litestar_calls == [STATES]
    assert status == 413
    assert problem["type"] == "urn:tillit:problem:payload-too-large"


async def test_a_body_in_several_messages_is_read_whole_on_the_fast_path(preferences: Service) -> None:
    body = _ids("astrid", "bo")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"authorization", preferences.auth()["Authorization"].encode()),
    ]
    preferences.litestar_calls.clear()
    status, answer = await _asgi(preferences.client, PROFILES, headers, [body[:5], b"", body[5:9], body[9:]])
    assert preferences.litestar_calls == []
    assert status == 200
    assert [profile["subject_id"] for profile in answer["profiles"]] == ["astrid", "bo"]
