"""``POST /v1/decide`` answered before Litestar's per-request machinery, when it would answer 200.

Why: under ``bench.decisions`` (20 segments, 30 rules, 200 candidates) Litestar's routing,
dependency and signature handling, the generic strict body check and the response objects were
about a third of the rules worker's CPU per decision, and the 200 candidates were decoded, read
into columns and indexed again for every decision although a shop sends the same list for many
shoppers. Even with their table kept, receiving and skipping their ~24 KB was ~20-25 % of the
worker's CPU per decision: hence the digest-only body for a list held here.

What takes this path: exactly ``POST /v1/decide`` without a query string or root path, with a
JSON content type, a service token the app's verifier accepts (checked before the body is read,
as the route checks it), a body within the route's bound and a body that decodes into
:class:`~services.rules.schemas.RawCandidatesDecisionRequest` with candidates that decode as
:class:`~services.rules.schemas.DecisionRequest` would decode them (their table comes from
:attr:`Engine.candidate_tables` when the same JSON was sent before), every other ``candidates``
value of a repeated key included. A body with a ``candidates_digest`` takes this path too: with the
candidates, when their bytes' SHA-256 is the digest (the table is then looked up, and offered to
the cache, by the digest: :meth:`Engine.digest_table`); alone (a body of a few hundred bytes, not
~24 KB), when a table is held for it. A digest that is not the candidates' (400) or names no table
held here (409 ``candidates-unknown``) is left to the route, which answers those problems.

The compiled definitions are rechecked against the database here as the route rechecks them
(:func:`~services.rules.service.current_engine`). Everything else — a missing or bad token, another
content type, a body too large or invalid, an ``OPTIONS``, a database that cannot be asked whether
the definitions are current — goes to Litestar unchanged, with the body read so far handed on as
it came: there the route checks and refuses as before, so every problem document is the one it
always was (the tests hold the two paths to the same answers). The decision is the same
:meth:`Engine.decide_on`, encoded and framed as Litestar frames it (``content-type``,
``content-length``); an exception from it is answered by the app's own exception handlers.

``POST /v1/decide/batch`` (the gateway's decisions without a list in them, up to 32 at a time: each
rules call cost this worker ~60 µs of CPU before any rule ran) takes the same path under the same
conditions, when its body decodes as :class:`~services.rules.schemas.DecisionBatch`: each item is
decided by :func:`decided`, exactly as a ``POST /v1/decide`` of that body would be here, or answered
``null`` where only the route could answer it, and the caller asks the route for those alone. The
route of the batch answers through the same :func:`decide_batch`.
"""

from __future__ import annotations

from typing import Final

import msgspec
from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.rules.engine import Engine
from services.rules.schemas import (
    Decision,
    DecisionBatch,
    DecisionBatchAnswer,
    DecisionRequest,
    RawCandidatesDecisionRequest,
)
from services.rules.selection import Candidates
from services.rules.service import current_engine
from tillit.fast_asgi import PLAIN_HOST, answer_json, answer_problem, replaying, whole_body
from tillit.service_tokens import ServiceTokenVerifier, authorization_of

__all__ = ["DECIDE_BODY_BYTES", "FastDecide", "decide_batch", "decided"]

DECIDE_BODY_BYTES: Final = 2 * 1024 * 1024
"""A decision carries up to 500 candidate products: the caller's JSON of them as the gateway took it
(a body of up to 1 MiB), plus the filtered profile and the context. The route's bound too."""
_PATH: Final = "/v1/decide"
_BATCH_PATH: Final = "/v1/decide/batch"
_PATHS: Final = frozenset((_PATH, _BATCH_PATH))
_CANDIDATES_KEY: Final = b'"candidates"'
_NULL: Final = msgspec.Raw(b"null")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RawCandidatesDecisionRequest, strict=True).decode
_decode_checked = msgspec.json.Decoder(DecisionRequest, strict=True).decode
_decode_batch = msgspec.json.Decoder(DecisionBatch, strict=True).decode


class FastDecide:
    """An ASGI app in front of the rules service's own: the common decision here, anything else to ``fallback``."""

    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self._app = app
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._takes(scope) or not self._authorized(scope):
            await self._fallback(scope, receive, send)
            return
        try:
            engine = await current_engine(self._app.state)
        except Exception:  # the database cannot be asked: the route answers it as it always has
            await self._fallback(scope, receive, send)
            return
        messages: list[Message] = []
        body = await whole_body(receive, messages, DECIDE_BODY_BYTES)
        if scope["path"] == _BATCH_PATH:
            batch = None if body is None else _batch(body)
            if batch is None:
                await self._fallback(scope, replaying(messages, receive), send)
                return
            await answer_json(send, _encode(decide_batch(engine, batch)))
            return
        request = None if body is None else _prepared(engine, body)
        if request is None:
            await self._fallback(scope, replaying(messages, receive), send)
            return
        decoded, table, held = request
        try:
            answer = _encode(engine.decide_on(decoded, table, held))
        except Exception as exc:
            await answer_problem(self._app, scope, replaying(messages, receive), send, exc)
            return
        await answer_json(send, answer)

    def _takes(self, scope: Scope) -> bool:
        """A decision this path may answer, as far as the request line and headers tell."""
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] not in _PATHS
            or scope["query_string"]
            or scope.get("root_path")
        ):
            return False
        json = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                if json:
                    return False
                media_type = value.decode("latin-1").split(";", 1)[0].strip().lower()
                json = media_type == "application/json" or media_type.endswith("+json")
                if not json:
                    return False
            elif name == b"content-length":
                if not value.isdigit() or int(value) > DECIDE_BODY_BYTES:
                    return False
            elif name == b"host" and PLAIN_HOST.fullmatch(value) is None:
                return False
        return json

    def _authorized(self, scope: Scope) -> bool:
        """A service token the app's verifier accepts (checked before the body is read, as the route does)."""
        verifier: ServiceTokenVerifier | None = self._app.state.get("service_tokens")
        if verifier is None:
            return False
        try:
            verifier.verify(authorization_of(scope))
        except Exception:
            return False
        return True


def decide_batch(engine: Engine, batch: DecisionBatch) -> DecisionBatchAnswer:
    """``POST /v1/decide/batch``, on this path and the route alike: each item decided as this path
    decides a ``POST /v1/decide`` body, ``null`` for one only that route can answer."""
    return DecisionBatchAnswer([decided(engine, bytes(item)) for item in batch.decisions])


def decided(engine: Engine, body: bytes) -> Decision | None:
    """The decision on one ``POST /v1/decide`` body when this path answers it 200; None when only the
    route can answer it (any problem, and every body this path leaves to the route)."""
    request = _prepared(engine, body)
    if request is None:
        return None
    decoded, table, held = request
    try:
        return engine.decide_on(decoded, table, held)
    except Exception:  # the route's problem document, for the gateway to ask for alone
        return None


def _batch(body: bytes) -> DecisionBatch | None:
    try:
        return _decode_batch(body)
    except Exception:  # ValidationError, DecodeError, RecursionError: the route's problem documents
        return None


def _prepared(
    engine: Engine, body: bytes
) -> tuple[RawCandidatesDecisionRequest, Candidates | None, bool | None] | None:
    """The decoded body, its candidates' table and whether that is held for the body's digest, when
    this path may decide it; None to leave the body to the route."""
    decoded = _decodable(body)
    if decoded is None:
        return None
    digest = decoded.candidates_digest
    held = None
    try:
        if digest is None:
            table = engine.candidate_table(decoded.candidates)
        else:
            table, held = engine.digest_table(decoded.candidates, digest)
    except Exception:  # refused as the route refuses it (ValidationError, ValueError, 409, digest 422 ...)
        return None
    return decoded, table, held


def _decodable(body: bytes) -> RawCandidatesDecisionRequest | None:
    """The decoded body when the body is valid."""
    try:
        decoded = _decode(body)
    except Exception:  # ValidationError, DecodeError, RecursionError: the route's problem documents
        return None
    if not _one_candidates_field(body, decoded.candidates):
        return None
    return decoded


def _one_candidates_field(body: bytes, candidates: msgspec.Raw) -> bool:
    """Whether every ``candidates`` value in the body is one :class:`DecisionRequest` accepts.

    A JSON object may repeat a key (the last one counts, but the route's decode checks each value),
    and only the last is decoded here. Without a backslash in the body every key is spelled
    plainly, so at most one plain ``"candidates"`` means at most one such key. Otherwise the body
    with the kept candidates replaced by ``null`` must decode as :class:`DecisionRequest`: that
    checks any other ``candidates`` value (however its key is spelled) as the route would.
    """
    if b"\\" not in body:
        return body.count(_CANDIDATES_KEY) <= 1
    rest = body
    if candidates != _NULL:
        raw = bytes(candidates)
        start = body.find(raw)
        if start < 0:
            return False
        rest = body[:start] + b"null" + body[start + len(raw) :]
    try:
        _decode_checked(rest)
    except Exception:
        return False
    return True
