"""The preference center's only way out: the gateway's shopper API, over keep-alive connections.

The calls go through :class:`tillit.http1.HTTP1Pool`, one pool for the process: with httpx, its
connection pool (httpcore through anyio) and h11 were half of the preference center's CPU per page
under ``bench.pages``. Tests hand in an ``httpx`` transport instead (a stand-in gateway).

Fails closed: a gateway that does not answer (or answers 5xx) raises :class:`GatewayUnavailable`,
which the pages turn into a friendly 503; nothing is guessed or cached. A 401 for the shopper's
token raises :class:`SessionEnded` (the page asks for a new link).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx
import msgspec

from tillit.http1 import HTTP1Pool

__all__ = [
    "GatewayAnswer",
    "GatewayClient",
    "GatewayError",
    "GatewayUnavailable",
    "SessionEnded",
    "forwarded_headers",
    "gateway_wait_ms",
    "record_gateway_waits",
]

_FORWARDED: Final = ("user-agent", "referer", "sec-gpc")


_WAITS: ContextVar[list[tuple[float, float]] | None] = ContextVar("gateway_waits", default=None)


def record_gateway_waits() -> list[tuple[float, float]]:
    """Start noting, for the current request, when it waited on the gateway (for ``Server-Timing``)."""
    waits: list[tuple[float, float]] = []
    _WAITS.set(waits)
    return waits


def gateway_wait_ms(waits: list[tuple[float, float]]) -> float:
    """Milliseconds spent waiting on the gateway; concurrent calls count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(waits):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total * 1000


class GatewayUnavailable(Exception):
    """The gateway did not answer, or failed: nothing can be shown or changed now."""


class GatewayError(Exception):
    """The gateway refused the request (4xx other than 401); ``slug`` is the problem type's last part."""

    def __init__(self, status: int, slug: str, detail: str, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {slug}: {detail}")
        self.status = status
        self.slug = slug
        self.detail = detail
        self.body = dict(body or {})


class SessionEnded(GatewayError):
    """The shopper token is no longer accepted (expired, revoked, or the subject was erased)."""


def forwarded_headers(headers: Mapping[str, str], client_host: str | None) -> dict[str, str]:
    """The evidence a consent records: the shopper's user agent, address, page and GPC signal."""
    out = {name: headers[name] for name in _FORWARDED if headers.get(name)}
    chain = [part.strip() for part in headers.get("x-forwarded-for", "").split(",") if part.strip()]
    if client_host:
        chain.append(client_host)
    if chain:
        out["x-forwarded-for"] = ", ".join(chain[-5:])
    return out


def _segment(value: str) -> str:
    return quote(value, safe="")


class GatewayAnswer:
    """A gateway answer as read whole: status and body."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def reason_phrase(self) -> str:
        try:
            return HTTPStatus(self.status_code).phrase
        except ValueError:
            return ""

    def json(self) -> Any:
        try:
            return msgspec.json.decode(self.content)
        except msgspec.DecodeError as exc:
            raise ValueError(str(exc)) from exc


_JSON_BODY: Final = {"content-type": "application/json"}
_encode = msgspec.json.Encoder().encode
POOL_SIZE: Final = 50


class GatewayClient:
    """Calls to ``/v1/shopper/*`` and ``/v1/me/*`` on behalf of one shopper token at a time."""

    def __init__(self, base_url: str, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        self._pool: HTTP1Pool | None = None
        self._client: httpx.AsyncClient | None = None
        if transport is None:
            self._pool = HTTP1Pool(POOL_SIZE, timeout)
        else:
            self._client = httpx.AsyncClient(
                base_url=base_url, timeout=timeout, transport=transport, follow_redirects=False
            )

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        if self._client is not None:
            await self._client.aclose()

    async def _send(
        self, method: str, path: str, json: Any, params: Mapping[str, str] | None, headers: dict[str, str]
    ) -> GatewayAnswer:
        body = None if json is None else _encode(json)
        if body is not None:
            headers.update(_JSON_BODY)
        if self._client is not None:
            response = await self._client.request(method, path, content=body, params=params, headers=headers)
            return GatewayAnswer(response.status_code, response.content)
        assert self._pool is not None
        target = f"{path}?{urlencode(params)}" if params else path
        status, content = await self._pool.request(method, self._base_url, target, headers, body)
        return GatewayAnswer(status, content)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        sent = {"accept": "application/json", **(headers or {})}
        if token is not None:
            sent["authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        try:
            response = await self._send(method, path, json, params, sent)
        except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
            raise GatewayUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        finally:
            waits = _WAITS.get()
            if waits is not None:
                waits.append((started, time.perf_counter()))
        if response.status_code >= 500:
            raise GatewayUnavailable(f"{method} {path}: {response.status_code}")
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            slug = str(body.get("type", "")).rstrip("/").rsplit("/", 1)[-1] or str(response.status_code)
            detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
            error = SessionEnded if response.status_code == 401 and token is not None else GatewayError
            raise error(response.status_code, slug, detail, body)
        if raw:
            return response
        if response.status_code == 204 or not response.content:
            return {}
        return response.json()

    # -- sessions ---------------------------------------------------------------------------------
    async def open_session(self, link_token: str, headers: Mapping[str, str]) -> dict[str, Any]:
        return await self._call("POST", "/v1/shopper/sessions", json={"link_token": link_token}, headers=headers)

    async def request_new_link(self, link_token: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/shopper/link-requests", json={"link_token": link_token})

    # -- profile ----------------------------------------------------------------------------------
    async def profile(self, token: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/me/profile", token=token)

    async def update_profile(self, token: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", "/v1/me/profile", token=token, json=dict(fields))

    # -- consents ---------------------------------------------------------------------------------
    async def consents(self, token: str, lang: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/me/consents", token=token, params={"lang": lang})

    async def consent_history(self, token: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/me/consents/history", token=token)

    async def record_consent(
        self,
        token: str,
        purpose: str,
        action: str,
        notice_version: int | None,
        language: str,
        headers: Mapping[str, str],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"purpose": purpose, "action": action, "language": language}
        if notice_version is not None:
            body["notice_version"] = notice_version
        return await self._call("POST", "/v1/me/consents", token=token, json=body, headers=headers)

    async def receipt(self, token: str, event_id: str) -> bytes:
        response: GatewayAnswer = await self._call(
            "GET", f"/v1/me/receipts/{_segment(event_id)}", token=token, raw=True, headers={"accept": "*/*"}
        )
        return response.content

    # -- quizzes ----------------------------------------------------------------------------------
    async def quizzes(self, token: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/quizzes", token=token)

    async def quiz_sessions(self, token: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/me/quiz-sessions", token=token)

    async def start_quiz(self, token: str, quiz_id: str, locale: str) -> dict[str, Any]:
        return await self._call(
            "POST", "/v1/me/quiz-sessions", token=token, json={"quiz_id": quiz_id, "locale": locale}
        )

    async def quiz_session(self, token: str, session_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/me/quiz-sessions/{_segment(session_id)}", token=token)

    async def answer(self, token: str, session_id: str, question_id: str, answer: Any) -> dict[str, Any]:
        path = f"/v1/me/quiz-sessions/{_segment(session_id)}/answers"
        return await self._call("POST", path, token=token, json={"question_id": question_id, "answer": answer})

    async def back(self, token: str, session_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/me/quiz-sessions/{_segment(session_id)}/back", token=token)

    async def complete(self, token: str, session_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/v1/me/quiz-sessions/{_segment(session_id)}/complete", token=token)

    # -- data-subject requests and export ---------------------------------------------------------
    async def requests(self, token: str) -> dict[str, Any]:
        return await self._call("GET", "/v1/me/requests", token=token)

    async def create_request(self, token: str, request_type: str) -> dict[str, Any]:
        return await self._call("POST", "/v1/me/requests", token=token, json={"type": request_type})

    async def export(self, token: str) -> GatewayAnswer:
        response: GatewayAnswer = await self._call("GET", "/v1/me/export", token=token, raw=True)
        return response
