"""``POST /v1/decide`` before Litestar answers exactly what the Litestar route answers.

Each request is sent twice, once through the whole app (the fast path, falling back to Litestar
when it must) and once straight to Litestar's own handler; status, headers and body must be the
same, for good requests and for every kind of bad one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from bench.decisions import SLOT, candidates, definitions
from services.rules.app import create_app
from services.rules.fast_decide import DECIDE_BODY_BYTES, FastDecide
from services.rules.selection import CandidateCache, Candidates
from services.rules.service import current_engine
from services.rules.tests.support import PROFILED
from tillit.keys import KEY_NAMES, SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import REPO_ROOT


@dataclass
class Rules:
    client: TestClient[Any]
    headers: dict[str, str]
    fast: FastDecide
    litestar: Any
    routed: list[str] = field(default_factory=list)
    """Requests the fast path handed to Litestar."""

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/decide") -> Any:
        sent = {**self.headers, "content-type": "application/json", **(headers or {})}
        return self.client.post(path, content=body, headers={k: v for k, v in sent.items() if v})

    def both(
        self,
        body: bytes,
        headers: dict[str, str] | None = None,
        path: str = "/v1/decide",
        before: Callable[[], None] | None = None,
    ) -> tuple[Any, Any]:
        """The answer of the app as served, and Litestar's alone, to the same request (``before``
        each of the two: e.g. the same candidate tables held for both)."""
        if before is not None:
            before()
        served = self.post(body, headers, path)
        app = self.client.app
        app.asgi_handler = self.litestar
        try:
            if before is not None:
                before()
            routed = self.post(body, headers, path)
        finally:
            app.asgi_handler = self.fast
        return served, routed


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rules]:
    for name in [name for name in os.environ if name.startswith("TILLIT_")]:
        monkeypatch.delenv(name)
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policy_dir)
    monkeypatch.setenv("TILLIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TILLIT_POLICY_DIR", str(policy_dir))
    monkeypatch.setenv("TILLIT_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("TILLIT_RULES_DEFINITIONS_DIR", "")
    for name in KEY_NAMES:
        ensure_signing_key(tmp_path / "keys", name)
    issuer = ServiceTokenIssuer(load_private_key(tmp_path / "keys", SERVICE_TOKEN_KEY), ttl_seconds=3600)
    headers = issuer.headers_for("rules")
    with TestClient(create_app()) as client:
        for body in definitions():
            saved = client.post("/v1/definitions", json=body, headers=headers)
            assert saved.status_code == 201, saved.text
        fast = client.app.asgi_handler
        assert isinstance(fast, FastDecide)
        litestar = fast._fallback
        rules = Rules(client, headers, fast, litestar)

        async def recorded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                rules.routed.append(f"{scope['method']} {scope['path']}")
            await litestar(scope, receive, send)

        fast._fallback = recorded
        assert rules.post(_encode(_valid())).json()["segments"]  # compiles the definitions saved
        assert rules.routed == []
        client.app.state.engine._checked_at = float("inf")  # fresh from now on: no look at the database
        yield rules


def _same(served: Any, routed: Any) -> None:
    assert served.status_code == routed.status_code, (served.text, routed.text)
    assert served.headers == routed.headers
    assert served.content == routed.content


def _rng(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - reproducible test data


def _visit(rng: random.Random, *, with_candidates: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "purpose": PROFILED,
        "profile": {
            "favourite_brands": rng.sample(["Gucci", "Hope", "Arket", "Ganni", "Acne Studios", "Filippa K"], 2),
            "favourite_categories": rng.sample(["jeans", "dresses", "tops", "shoes", "outerwear"], 2),
            "clothing_size": rng.choice(["XS", "M", "L"]),
            "sizes": {"shoes": rng.choice([38, 42, 44])},
        },
        "context": {
            "page": "home",
            "visit_count": rng.randrange(1, 4),
            "days_since_last_visit": rng.randrange(0, 120),
            "slots": [SLOT],
        },
        "assignment_key": f"{rng.getrandbits(96):024x}",
    }
    if rng.random() < 0.3:
        body["limit"] = rng.randrange(1, 60)
    if with_candidates:
        body["candidates"] = candidates(_rng(rng.randrange(3)))
    return body


def test_good_decisions_take_the_fast_path_and_answer_as_the_route_does(rules: Rules) -> None:
    rng = _rng(20261125)
    for number in range(40):
        body = msgspec.json.encode(_visit(rng, with_candidates=number % 8 != 0))
        served, routed = rules.both(body)
        assert served.status_code == 200, served.text
        assert served.json()["segments"], served.text
        _same(served, routed)
    assert rules.routed == []
    assert len(rules.client.app.state.engine.candidate_tables) == 3  # three lists, each sent again and again
    assert rules.post(msgspec.json.encode({**_visit(rng), "candidates": None})).status_code == 200
    assert rules.post(msgspec.json.encode({**_visit(rng), "candidates": []})).status_code == 200
    assert rules.routed == []


def test_escapes_in_a_good_body_take_the_fast_path_and_the_same_answer(rules: Rules) -> None:
    rng = _rng(3)
    quoted = [{**product, "brand": 'The "Best"\\', "tags": ["caf\u00e9"]} for product in _LIST[:5]] + _LIST[5:]
    for body in (
        {**_visit(rng), "candidates": quoted},
        {**_visit(rng), "profile": {"favourite_brands": ['The "Best"\\'], "style": "a\nb"}},
        {**_visit(rng), "profile": {"favourite_brands": ['The "Best"\\']}, "candidates": quoted},
        b'{"candid\\u0061tes": ' + _CANDIDATES.encode() + b", " + msgspec.json.encode(_visit(rng))[1:],
    ):
        encoded = body if isinstance(body, bytes) else msgspec.json.encode(body)
        assert b"\\" in encoded
        served, routed = rules.both(encoded)
        assert served.status_code == 200, served.text
        _same(served, routed)
    assert rules.routed == []


def _valid() -> dict[str, Any]:
    return _visit(_rng(7))


def _encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else msgspec.json.encode(body)


def _digest(candidates: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(candidates)).hexdigest()


_LIST = candidates(_rng(1))
_CANDIDATES = msgspec.json.encode(_LIST).decode()
_BAD_REQUESTS: list[tuple[str, Any, dict[str, str], int]] = [
    ("no token", _valid(), {"Authorization": ""}, 401),
    ("a bad token", _valid(), {"Authorization": "Bearer nope"}, 401),
    ("no content type", _valid(), {"content-type": ""}, 415),
    ("a form", _valid(), {"content-type": "application/x-www-form-urlencoded"}, 415),
    ("not JSON", b'{"purpose": ', {}, 400),
    ("an array", b"[]", {}, 400),
    ("an unknown field", {**_valid(), "colour": "red"}, {}, 400),
    ("no purpose", {k: v for k, v in _valid().items() if k != "purpose"}, {}, 400),
    ("a bad limit", {**_valid(), "limit": 0}, {}, 400),
    ("a float limit", {**_valid(), "limit": 3.5}, {}, 400),
    ("a bad context", {**_valid(), "context": {"page": "Home Page"}}, {}, 400),
    ("a candidate id", {**_valid(), "candidates": [{**_LIST[0], "id": "bad id"}]}, {}, 400),
    ("a candidate price", {**_valid(), "candidates": [{**_LIST[0], "price": "9"}]}, {}, 400),
    ("a candidate field", {**_valid(), "candidates": [{**_LIST[0], "x": 1}]}, {}, 400),
    ("candidates not a list", {**_valid(), "candidates": {"id": "p1"}}, {}, 400),
    ("too many candidates", {**_valid(), "candidates": _LIST * 3}, {}, 400),
    (
        "candidates twice, the first bad",  # the route takes the last (its decode's general path)
        b'{"candidates": [{"id": 1}], ' + msgspec.json.encode(_valid())[1:],
        {},
        200,
    ),
    (
        "candidates twice, the second spelled with an escape",
        msgspec.json.encode(_valid())[:-1] + b', "candid\\u0061tes": [{"id": 1}]}',
        {},
        400,
    ),
    (
        "candidates twice, the first bad and spelled with an escape",  # the route takes the last, as above
        b'{"candid\\u0061tes": [{"id": 1}], ' + msgspec.json.encode(_valid())[1:],
        {},
        200,
    ),
    (
        "candidates twice, both good",
        msgspec.json.encode(_valid())[:-1] + f', "candidates": {_CANDIDATES}}}'.encode(),
        {},
        200,
    ),
    ("an unknown digest alone", {**_valid(), "candidates": None, "candidates_digest": "0" * 64}, {}, 409),
    (
        "an unknown digest, no candidates",
        {k: v for k, v in _valid().items() if k != "candidates"} | {"candidates_digest": "ab" * 32},
        {},
        409,
    ),
    ("a digest not of the candidates", {**_valid(), "candidates_digest": "0" * 64}, {}, 422),
    ("a digest in capitals", {**_valid(), "candidates_digest": "AB" * 32}, {}, 400),
    ("a digest too short", {**_valid(), "candidates_digest": "ab" * 31}, {}, 400),
    ("a digest with a newline", {**_valid(), "candidates_digest": "ab" * 32 + "\n"}, {}, 400),
    (
        "a digest of a refused candidate",
        {
            **_valid(),
            "candidates": [{**_LIST[0], "price": "9"}],
            "candidates_digest": _digest([{**_LIST[0], "price": "9"}]),
        },
        {},
        400,
    ),
    ("a nesting bomb", b'{"purpose": "a", "profile": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}", {}, 400),
    ("too large a body", {**_valid(), "profile": {"x": "y" * DECIDE_BODY_BYTES}}, {}, 413),
]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [pytest.param(body, headers, status, id=name) for name, body, headers, status in _BAD_REQUESTS],
)
def test_other_requests_go_to_litestar_and_get_its_answers(
    rules: Rules, body: Any, headers: dict[str, str], status: int
) -> None:
    served, routed = rules.both(_encode(body), headers)
    assert served.status_code == status, served.text
    _same(served, routed)
    assert rules.routed == ["POST /v1/decide"]


def test_a_query_string_or_another_path_goes_to_litestar(rules: Rules) -> None:
    body = _encode(_valid())
    for path in ("/v1/decide?x=1", "/v1/decide/", "/v1/evaluate"):
        served, routed = rules.both(body, path=path)
        _same(served, routed)
    assert rules.routed == ["POST /v1/decide", "POST /v1/decide/", "POST /v1/evaluate"]


def test_a_stale_engine_is_rechecked_on_the_fast_path(rules: Rules) -> None:
    state = rules.client.app.state
    state.engine.invalidate()
    served = rules.post(_encode(_valid()))
    assert served.status_code == 200
    assert state.engine.fresh(state.policy)
    assert rules.routed == []


def test_a_definition_saved_meanwhile_is_seen_on_the_fast_path(rules: Rules) -> None:
    before = rules.post(_encode(_valid())).json()
    assert "everyone" not in before["segments"]
    everyone = {
        "kind": "segment",
        "key": "everyone",
        "title": "Everyone",
        "purpose": PROFILED,
        "when": {"field": "context.visit_count", "op": "gte", "value": 0},
    }
    saved = rules.client.post("/v1/definitions", json=everyone, headers=rules.headers)
    assert saved.status_code == 201, saved.text
    rules.routed.clear()
    assert "everyone" in rules.post(_encode(_valid())).json()["segments"]
    assert rules.routed == []


def test_a_burst_of_stale_decisions_rechecks_once(rules: Rules) -> None:
    state = rules.client.app.state
    state.engine.invalidate()
    sessionmaker = state.database.sessionmaker
    opened: list[int] = []

    def counted() -> Any:
        opened.append(1)
        return sessionmaker()

    async def burst() -> list[Any]:
        return await asyncio.gather(*(current_engine(state) for _ in range(8)))

    state.database.sessionmaker = counted
    try:
        engines = rules.client.blocking_portal.call(burst)
    finally:
        state.database.sessionmaker = sessionmaker
    assert opened == [1]
    assert all(engine is state.engine for engine in engines)


def test_a_database_that_cannot_be_asked_leaves_the_decision_to_the_route(rules: Rules) -> None:
    state = rules.client.app.state
    state.engine.invalidate()
    sessionmaker = state.database.sessionmaker

    def unreachable() -> Any:
        raise ConnectionRefusedError("the database is down")

    state.database.sessionmaker = unreachable
    try:
        served = rules.post(_encode(_valid()))
    finally:
        state.database.sessionmaker = sessionmaker
    assert served.status_code >= 500
    assert served.headers["content-type"].startswith("application/problem+json")
    assert rules.routed == ["POST /v1/decide"]


def _with_digest(body: dict[str, Any], *, alone: bool = False) -> bytes:
    """``body`` with the SHA-256 of its candidates' JSON, as encoded here, beside them or instead of them."""
    sent = msgspec.json.encode(body["candidates"])
    digest = hashlib.sha256(sent).hexdigest()
    rest = {key: value for key, value in body.items() if key != "candidates"}
    if alone:
        return msgspec.json.encode({**rest, "candidates_digest": digest})
    return msgspec.json.encode({**rest, "candidates": msgspec.Raw(sent), "candidates_digest": digest})


def test_a_list_with_its_digest_then_the_digest_alone_answer_as_the_list_does(rules: Rules) -> None:
    rng = _rng(11)
    for _ in range(3):
        body = {**_visit(rng), "candidates": candidates(_rng(rng.randrange(10**6)))}
        full = rules.post(_encode(body))
        assert full.status_code == 200, full.text
        assert b"candidates_held" not in full.content  # no digest, no new field: the answer as before

        def held(answer: bytes, full: Any = full) -> bytes:
            return bytes(full.content[:-1] + b',"candidates_held":' + answer + b"}")

        # Kept at once (CandidateCache has room), so the digest alone will do from now on.
        assert rules.post(_with_digest(body)).content == held(b"true")
        for _ in range(3):
            alone = rules.post(_with_digest(body, alone=True))
            assert alone.status_code == 200, alone.text
            assert alone.content == held(b"true")
            assert len(_with_digest(body, alone=True)) < 1024 < len(_with_digest(body))
    assert rules.routed == []


def test_digests_on_the_fast_path_answer_as_the_route_does(rules: Rules) -> None:
    state = rules.client.app.state
    rng = _rng(12)
    for number in range(12):
        body = _visit(rng)
        with_list, alone = _with_digest(body), _with_digest(body, alone=True)
        tables = CandidateCache()

        def full() -> None:  # no room: a list is not kept at its first sighting
            state.engine.candidate_tables = CandidateCache(entries=1)
            state.engine.candidate_tables.put("f" * 64, Candidates([]), 10)

        def held(tables: CandidateCache = tables) -> None:
            state.engine.candidate_tables = tables

        if number % 3 == 0:  # not held before: decoded, and not kept
            served, routed = rules.both(with_list, before=full)
            assert served.json()["candidates_held"] is False, served.text
        else:  # held: the list and its digest, or the digest alone
            held()
            assert rules.post(with_list).json()["candidates_held"] is True
            served, routed = rules.both(with_list if number % 3 == 1 else alone, before=held)
            assert served.json()["candidates_held"] is True, served.text
        assert served.status_code == 200, served.text
        _same(served, routed)
    assert rules.routed == []


def test_a_digest_alone_after_the_tables_were_dropped_is_a_409_then_the_list_again_answers(rules: Rules) -> None:
    body = _valid()
    assert rules.post(_with_digest(body)).status_code == 200
    assert rules.post(_with_digest(body, alone=True)).json()["candidates_held"] is True
    rules.client.app.state.engine.candidate_tables.clear()  # as a definition change, or a restart, drops them
    served, routed = rules.both(_with_digest(body, alone=True))
    _same(served, routed)
    assert served.status_code == 409
    problem = served.json()
    assert problem["type"] == "urn:tillit:problem:candidates-unknown"
    assert "send the list" in problem["detail"]
    assert rules.routed == ["POST /v1/decide"]
    rules.routed.clear()
    again = rules.post(_with_digest(body))
    assert again.status_code == 200
    assert rules.routed == []


def test_a_digest_that_is_not_the_candidates_is_refused_naming_both(rules: Rules) -> None:
    body = _valid()
    wrong = "0" * 64
    served, routed = rules.both(_encode({**body, "candidates_digest": wrong}))
    _same(served, routed)
    assert served.status_code == 422  # schema-valid, refused for what no schema can say
    problem = served.json()
    assert problem["type"] == "urn:tillit:problem:candidates-digest-mismatch"
    assert wrong in problem["detail"]
    assert _digest(body["candidates"]) in problem["detail"]
    # A list re-encoded with other whitespace is other bytes: the digest is of the bytes as sent.
    spaced = msgspec.json.format(msgspec.json.encode(body["candidates"]), indent=1)
    other = {**body, "candidates": msgspec.Raw(spaced), "candidates_digest": _digest(body["candidates"])}
    assert rules.post(_encode(other)).status_code == 422


def _batch(*bodies: bytes) -> bytes:
    return b'{"decisions": [' + b", ".join(bodies) + b"]}"


def test_a_batch_answers_each_decision_as_post_decide_alone_or_leaves_it_to_it(rules: Rules) -> None:
    rng = _rng(30)
    held_body, unknown_body = _visit(rng), _visit(rng)
    unknown_body["candidates"] = candidates(_rng(99))
    assert rules.post(_with_digest(held_body)).json()["candidates_held"] is True
    refused = _visit(rng)
    refused["candidates"] = [{**_LIST[0], "price": "cheap"}, *_LIST[1:]]
    items = [
        _encode(_visit(rng)),  # with its list
        _encode(_visit(rng, with_candidates=False)),  # the demo catalogue's
        _with_digest(held_body, alone=True),  # a list held here, by its digest
        _with_digest(unknown_body, alone=True),  # a digest of a list never sent: only POST /v1/decide says so
        _encode(refused),  # a candidate the schema refuses
        _encode({**_visit(rng), "profile": "nobody"}),  # not a decision body at all
    ]
    answer = rules.post(_batch(*items), path="/v1/decide/batch")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert rules.routed == []
    alone = [rules.post(item) for item in items]
    assert [single.status_code for single in alone] == [200, 200, 200, 409, 400, 400]
    assert results[:3] == [single.json() for single in alone[:3]]
    assert results[3:] == [None, None, None]


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(_batch(_encode(_valid()), _encode(_visit(_rng(8), with_candidates=False))), id="good"),
        pytest.param(b'{"decisions": [', id="not JSON"),
        pytest.param(b'{"decisions": []}', id="empty"),
        pytest.param(_batch(*[b"{}"] * 33), id="too many"),
        pytest.param(b'{"decisions": [{}], "more": 1}', id="an unknown field"),
        pytest.param(b'{"decisions": {}}', id="not a list"),
    ],
)
def test_a_batch_before_litestar_answers_as_the_route_does(rules: Rules, batch: bytes) -> None:
    served, routed = rules.both(batch, path="/v1/decide/batch")
    _same(served, routed)
    good = served.status_code == 200
    assert good or served.status_code == 400, served.text
    assert rules.routed == ([] if good else ["POST /v1/decide/batch"])


def test_a_batch_without_a_token_is_refused_before_anything_is_decided(rules: Rules) -> None:
    served, routed = rules.both(_batch(_encode(_valid())), {"Authorization": ""}, path="/v1/decide/batch")
    _same(served, routed)
    assert served.status_code == 401
