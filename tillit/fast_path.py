"""The internal services' batch reads, answered before Litestar's per-request machinery.

Why: every profile release makes the gateway read the consent state and the profile in small
batches (median 2-4 keys), so per-request overhead dominates these reads: Litestar's routing, the
``before_request`` hook, body parsing, the signature model and the response objects were about half
of a batch read's CPU in the consent and preferences services (py-spy, in-process measurements).

What takes this path: a ``POST`` to exactly a route's path (the path parameters matching their
documented patterns), with no query string, one ``Authorization`` header, ``Content-Type:
application/json`` as its first content type, a ``Content-Length`` within the route's body limit, a
plain ``Host`` header, and the app not mounted under a root path. Everything else goes to Litestar
unchanged, which answers as before (``415``, ``413``, the ``400`` of a bad path parameter, ``OPTIONS``).
The routes stay declared in Litestar, which answers a body that turns out longer than announced too.

On this path the steps and their order are those of the Litestar route: the service token (401)
as ``before_request`` checks it, the body decoded strictly into the handler's type as
:func:`tillit.app.decode_strictly` does for the route (400), then the same read the handler makes.
Any exception is answered by the application's own exception handlers, so errors are the same RFC
9457 problem documents; the answer is encoded and framed as Litestar frames it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from litestar import Litestar
from litestar.serialization import encode_json, get_serializer
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from tillit.app import decode_strictly
from tillit.fast_asgi import PLAIN_HOST, answer_json, answer_problem, replaying, whole_body
from tillit.service_tokens import ServiceTokenVerifier

__all__ = ["BatchRead", "FastBatchReads", "install_fast_batch_reads"]

_DIGITS: Final = re.compile(rb"[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class BatchRead:
    """One ``POST`` route answered here: its path, its body's type and size limit, and its read.

    ``answer`` is given the application, the path's match (its groups are the path parameters) and
    the decoded body; it must be what the Litestar handler of ``path`` does with them. Not the
    request: building one cost a few µs per read, so it is built only to answer an error.
    """

    path: re.Pattern[str]
    body: type[Any]
    max_body_bytes: int
    answer: Callable[[Litestar, re.Match[str], Any], Awaitable[Any]]


class FastBatchReads:
    """An ASGI app in front of a service's own: its common batch reads here, anything else to ``fallback``."""

    def __init__(
        self, app: Litestar, fallback: ASGIApp, verifier: ServiceTokenVerifier, routes: Sequence[BatchRead]
    ) -> None:
        self._app = app
        self._fallback = fallback
        self._verifier = verifier
        self._routes = tuple(routes)
        self._serializer = get_serializer(app.type_encoders)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._common_read(scope)
        if found is None:
            await self._fallback(scope, receive, send)
            return
        route, match, authorization = found
        try:
            self._verifier.verify(authorization)
        except Exception as exc:
            await answer_problem(self._app, scope, receive, send, exc)
            return
        messages: list[Message] = []
        body = await whole_body(receive, messages, route.max_body_bytes)
        if body is None:
            # Longer than its limit, or not a plain body: Litestar answers it from the start.
            await self._fallback(scope, replaying(messages, receive), send)
            return
        try:
            data = decode_strictly(body, route.body)
            content = encode_json(await route.answer(self._app, match, data), self._serializer)
        except Exception as exc:
            await answer_problem(self._app, scope, receive, send, exc)
            return
        await answer_json(send, content)

    def _common_read(self, scope: Scope) -> tuple[BatchRead, re.Match[str], str | None] | None:
        """(route, path match, Authorization header) of a request this path answers, else None."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"] or scope.get("root_path"):
            return None
        path: str = scope["path"]
        for route in self._routes:
            if (match := route.path.fullmatch(path)) is not None:
                break
        else:
            return None
        authorization: str | None = None
        content_type: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return None
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"host" and PLAIN_HOST.fullmatch(value) is None:
                return None
        if content_type != b"application/json" or length is None or _DIGITS.fullmatch(length) is None:
            return None
        if int(length) > route.max_body_bytes:
            return None
        return route, match, authorization


def install_fast_batch_reads(app: Litestar, routes: Sequence[BatchRead]) -> Litestar:
    """Put :class:`FastBatchReads` in front of ``app``, checking tokens with the app's own verifier."""
    verifier: ServiceTokenVerifier | None = app.state.get("service_tokens")
    if verifier is None:
        raise RuntimeError("batch reads answered before Litestar need the app's service-token verifier")
    app.asgi_handler = FastBatchReads(app, app.asgi_handler, verifier, routes)
    return app
