"""What every path answered in front of Litestar's router shares: framing, errors, the body.

The gateway's release and decision (:mod:`gateway.fast_release`, :mod:`gateway.fast_decision`), the
services' batch reads (:mod:`tillit.fast_path`) and the rules service's decision
(:mod:`services.rules.fast_decide`) answer their common request as plain ASGI apps. Their answers
must be byte for byte Litestar's: a 200 framed as Litestar frames it, and any error answered by the
application's own exception handlers, so problem documents stay RFC 9457 and identical.
"""

from __future__ import annotations

import re
from typing import Any, Final

from litestar import Litestar, Request
from litestar.types import Message, Receive, Scope, Send

__all__ = ["PLAIN_HOST", "answer_json", "answer_problem", "replaying", "whole_body"]

PLAIN_HOST: Final = re.compile(rb"[0-9A-Za-z.\-:\[\]]*")
"""A subset of what Litestar's router accepts as a host (problem documents name the request's URL);
a request with any other ``Host`` goes through Litestar."""
_JSON: Final = (b"content-type", b"application/json")


async def answer_json(send: Send, body: bytes) -> None:
    """A 200 with a JSON body, framed as Litestar frames it (``content-type``, ``content-length``)."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def answer_problem(
    app: Litestar,
    scope: Scope,
    receive: Receive,
    send: Send,
    exc: Exception,
    request: Request[Any, Any, Any] | None = None,
) -> None:
    """The error as the app's exception handlers answer it (what Litestar's own middleware does)."""
    handlers: dict[Any, Any] = app.exception_handlers
    handler = next((handlers[cls] for cls in type(exc).__mro__ if cls in handlers), None)
    if handler is None:
        raise exc
    if request is None:
        request = app.request_class(scope, receive, send)
    response = handler(request, exc)
    await response.to_asgi_response(app=None, request=request, type_encoders=app.type_encoders)(scope, receive, send)


async def whole_body(receive: Receive, messages: list[Message], limit: int) -> bytes | None:
    """The request's body if it is at most ``limit`` bytes, else None; ``messages`` keeps what was received.

    None also when the client went away first: Litestar, given the messages again by
    :func:`replaying`, answers such a request as it always does.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` with ``messages`` (already received) given again first."""
    pending = list(messages)

    async def replayed() -> Any:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
