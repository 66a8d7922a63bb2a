"""A decision's common request, answered before Litestar's per-request machinery (as gateway.fast_release).

Why: under ``bench.decisions`` Litestar's routing, guard, body handling, dependency injection and
response objects were ~60 % of the gateway's CPU per decision (py-spy), the strict body check in
``before_request`` alone 8-9 %. Here (ASGI app driven in-process, upstream and audit writer stubbed,
200 candidates) a decision costs 43 µs against the route's 147 µs; on the platform the gateway's CPU
per decision fell from 0.63 to 0.47 ms (``bench.decisions``; a release costs it 0.16 ms).

What takes this path: exactly ``POST /v1/subjects/{subject_id}/decisions?purpose=P`` where the id and
``P`` match their documented patterns and lengths and nothing else is in the query (as
gateway.fast_release), with one ``Content-Type: application/json`` (no parameters), one
``Content-Length`` of at most :data:`~gateway.decisions.DECISION_BODY_BYTES` (either repeated: to
Litestar), at most one ``Authorization``, a plain ``Host`` and no root path. Everything else goes to Litestar unchanged
(another content type: 415 or one Litestar accepts; no or a larger length: chunked bodies and 413;
the 400s of a bad id or query). The route stays declared there.

On this path the steps and their order are those of the Litestar route:

1. the access token (401) and the channel's rate limit (429), as the route's guard;
2. the body, read as Litestar's request reads it (413 past the bound, whatever the announced length)
   and decoded as ``before_request`` decodes it: the typed strict decode first, and on any refusal
   :func:`tillit.app.decode_strictly` itself, so a 400 names the same thing and a body the typed
   decode refuses but the schema allows (``"limit": 2.0``) is read the same way;
3. on SQLite, the database's write turn, as the route's request session takes it;
4. the same :func:`gateway.decisions.decide_on_body` as the route (slots 422, scope 403, purpose
   checks and their audit, the release reads, the rules call with its refusal of a candidate as the
   caller's 400 and 503 when it is down, the audit row committed before the answer).

Any exception is answered by the application's own exception handlers, so errors are the same RFC
9457 problem documents; the answer is encoded and framed as Litestar frames it.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from typing import Any, Final

import msgspec
from litestar import Litestar
from litestar.exceptions import InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.candidate_lists import KnownLists, decode_around_known_list
from gateway.decisions import DECISION_BODY_BYTES, DecisionBody, decide_on_body, sessionless_decisions
from gateway.fast_release import SUBJECT_ID, subject_purpose, verified_caller
from tillit.app import decode_strictly
from tillit.db import Database
from tillit.fast_asgi import PLAIN_HOST, answer_json, answer_problem

__all__ = ["FastDecision", "decode_decision_body", "read_body"]

_PATH: Final = re.compile(rf"/v1/subjects/({SUBJECT_ID})/decisions")
_LENGTH: Final = re.compile(rb"[0-9]{1,7}")
_decoder = msgspec.json.Decoder(DecisionBody, strict=True)
_decode_typed = _decoder.decode


def decode_decision_body(body: bytes, known: KnownLists | None = None) -> DecisionBody:
    """The body as ``before_request`` decodes it for the route (:func:`tillit.app.decode_strictly`).

    That function tries this same typed strict decode first and returns its value; only a body it
    refuses is handed to it, to be read (or refused) exactly as there. With ``known`` lists, a body
    whose candidates are one of them is decoded around it (:func:`decode_around_known_list`: the same
    value, without reading the list again).
    """
    if known is not None:
        decoded = decode_around_known_list(body, known, _decoder)
        if decoded is not None:
            return decoded
    try:
        return _decode_typed(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        decoded: DecisionBody = decode_strictly(body, DecisionBody)
        return decoded


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request body as Litestar's ``Request.body()`` reads it: 413 once more than ``limit`` bytes
    came, whatever the announced length; 500 if the client went away."""
    chunks: list[bytes] = []
    total = 0
    while True:
        event: Any = await receive()
        if event["type"] == "http.request":
            chunk: bytes = event.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not event.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")


class FastDecision:
    """An ASGI app in front of the gateway's own: the common decision here, anything else to ``fallback``."""

    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self._app = app
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._common_decision(scope)
        if request is None:
            await self._fallback(scope, receive, send)
            return
        authorization, subject_id, purpose = request
        try:
            state = self._app.state
            caller = verified_caller(state, authorization)
            known = getattr(state.get("upstream"), "known_lists", None)
            data = decode_decision_body(await read_body(receive, DECISION_BODY_BYTES), known)
            database: Database = state.database
            async with database.write_turns or nullcontext():
                decision = await decide_on_body(sessionless_decisions(state), caller, subject_id, purpose, data)
            body = encode_json(decision)
        except Exception as exc:
            await answer_problem(self._app, scope, receive, send, exc)
            return
        await answer_json(send, body)

    def _common_decision(self, scope: Scope) -> tuple[str | None, str, str] | None:
        """(Authorization header, subject id, purpose) of a request this path answers, else None."""
        target = subject_purpose(self._app, scope, "POST", _PATH)
        if target is None:
            return None
        authorization: str | None = None
        json = length = False
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return None
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                if json or value != b"application/json":
                    return None
                json = True
            elif name == b"content-length":
                if length or _LENGTH.fullmatch(value) is None or int(value) > DECISION_BODY_BYTES:
                    return None
                length = True
            elif name == b"host" and PLAIN_HOST.fullmatch(value) is None:
                return None
        if not (json and length):
            return None
        return authorization, *target
