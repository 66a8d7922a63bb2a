"""The single profile release's common request, answered before Litestar's per-request machinery.

Why: under ``bench.gateway`` Litestar's routing, the guard call (it copies the route handler for
every guard), parameter parsing, the signature model and the response objects were over half of
the gateway's CPU per release (py-spy), more than the release itself.

What takes this path: exactly ``GET /v1/subjects/{subject_id}/profile?purpose=P`` where the id and
``P`` match their documented patterns and lengths, nothing else is in the query (no repeated or
extra parameter, no percent-escape), the ``Host`` header is plain and the app is not mounted under a
root path. Everything else goes to Litestar unchanged, which validates and answers as before (the
400s of bad input, ``OPTIONS``, ``HEAD``, the OpenAPI document). The route stays declared there.

On this path the steps and their order are those of the Litestar route: the access token (401) and
the channel's rate limit (429) as the route's guard checks them, then the same
:func:`gateway.api.release_profile` (purpose checks and their audit, batched reads, the release
rule, the audit row committed before the answer). Any exception is answered by the application's
own exception handlers, so errors are the same RFC 9457 problem documents; the answer is encoded
and framed as Litestar frames it (``content-type``, ``content-length``).
"""

from __future__ import annotations

import re
from typing import Final

from litestar import Litestar
from litestar.datastructures import State
from litestar.serialization import encode_json
from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.api import release_profile
from gateway.oauth import Caller, TokenService
from gateway.ratelimit import enforce_rate_limit
from tillit.fast_asgi import PLAIN_HOST, answer_json, answer_problem
from tillit.patterns import inner
from tillit.types import PURPOSE_PATTERN, SUBJECT_ID_PATTERN

__all__ = ["SUBJECT_ID", "FastRelease", "purpose_query", "subject_purpose", "verified_caller"]

SUBJECT_ID: Final = inner(SUBJECT_ID_PATTERN)
"""A subject id as its path parameter takes it (at most 64 characters), for a path's regex."""
_PATH: Final = re.compile(rf"/v1/subjects/({SUBJECT_ID})/profile")
_QUERY: Final = re.compile(rf"purpose=({inner(PURPOSE_PATTERN)})".encode())
_MAX_QUERY: Final = len(b"purpose=") + 100
"""``purpose`` is at most 100 characters (``gateway.api.PurposeQuery``)."""


def purpose_query(query: bytes) -> str | None:
    """The purpose of a query that is exactly ``purpose=P`` (valid, unescaped), else None."""
    if len(query) > _MAX_QUERY or (purpose := _QUERY.fullmatch(query)) is None:
        return None
    return purpose.group(1).decode()


class FastRelease:
    """An ASGI app in front of the gateway's own: the common release here, anything else to ``fallback``."""

    def __init__(self, app: Litestar, fallback: ASGIApp) -> None:
        self._app = app
        self._fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = self._common_release(scope)
        if authorization is None:
            await self._fallback(scope, receive, send)
            return
        subject_id, purpose = authorization[1], authorization[2]
        try:
            state = self._app.state
            caller = verified_caller(state, authorization[0])
            body = encode_json(await release_profile(state, caller, subject_id, purpose))
        except Exception as exc:
            await answer_problem(self._app, scope, receive, send, exc)
            return
        await answer_json(send, body)

    def _common_release(self, scope: Scope) -> tuple[str | None, str, str] | None:
        """(Authorization header, subject id, purpose) of a request this path answers, else None."""
        target = subject_purpose(self._app, scope, "GET", _PATH)
        if target is None:
            return None
        authorization: str | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return None
                authorization = value.decode("latin-1")
            elif name == b"host" and PLAIN_HOST.fullmatch(value) is None:
                return None
        return authorization, *target


def subject_purpose(app: Litestar, scope: Scope, method: str, path: re.Pattern[str]) -> tuple[str, str] | None:
    """(subject id, purpose) of a ``method`` request to ``path`` with ``?purpose=P`` alone, else None.

    None too when the app is mounted under a root path or has no audit writer (then the route's own
    request session writes the audit row).
    """
    if scope["type"] != "http" or scope["method"] != method or scope.get("root_path"):
        return None
    purpose = purpose_query(scope["query_string"])
    if purpose is None:
        return None
    matched = path.fullmatch(scope["path"])
    if matched is None or app.state.get("audit_writer") is None:
        return None
    return matched.group(1), purpose


def verified_caller(state: State, authorization: str | None) -> Caller:
    """The channel behind the access token (401), within its rate limit (429): the routes' guard."""
    tokens: TokenService = state.tokens
    caller = tokens.verify(authorization)
    enforce_rate_limit(state, caller)
    return caller
