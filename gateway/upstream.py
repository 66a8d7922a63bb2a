"""Calls from the gateway to the internal services, with service tokens and fail-closed errors.

Anything that keeps the gateway from knowing the consent state or the profile for sure — a
refused connection, a timeout, a 5xx, an answer that does not decode — becomes 503 and no field
is released.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import httpx
import msgspec

from gateway.release import ConsentView
from gateway.schemas import RulesDecision
from tillit.problems import NotFound, TillitError, Unavailable
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import Settings

__all__ = ["ConsentState", "StoredProfile", "Upstream"]

_log = logging.getLogger("tillit.gateway.upstream")
T = TypeVar("T")


class PurposeState(ConsentView, frozen=True):
    purpose: str = ""


class ConsentState(msgspec.Struct):
    subject_id: str
    consents: list[PurposeState]

    def for_purpose(self, purpose: str) -> ConsentView | None:
        return next((state for state in self.consents if state.purpose == purpose), None)


class StoredProfile(msgspec.Struct):
    subject_id: str
    fields: dict[str, Any]


class _UpstreamProblem(TillitError):
    """A 4xx answer from a service, passed on to the caller as it came."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("detail") or "the request was refused"))
        self.status_code = status  # type: ignore[misc]
        self.title = str(body.get("title") or "Refused")  # type: ignore[misc]
        slug = str(body.get("type") or "").rsplit(":", 1)[-1]
        self.slug = slug or "refused"  # type: ignore[misc]


class Upstream:
    def __init__(self, settings: Settings, issuer: ServiceTokenIssuer) -> None:
        self._settings = settings
        self._issuer = issuer
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.upstream_timeout),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        service: str,
        method: str,
        path: str,
        answer: type[T],
        extra_headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> T:
        url = f"{self._settings.url_of(service)}{path}"
        headers = {**self._issuer.headers_for(service), **(extra_headers or {})}
        try:
            response = await self._client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            _log.warning("%s service unreachable: %s", service, exc)
            raise Unavailable(
                f"the {service} service cannot be reached, so nothing can be decided or released",
                slug=f"{service}-unavailable",
            ) from exc
        if response.status_code == 404 and service == "preferences":
            raise NotFound("no profile is held for this subject", slug="profile-not-found")
        if 400 <= response.status_code < 500 and response.status_code not in (401, 403):
            raise _UpstreamProblem(response.status_code, _json_or_empty(response))
        if response.status_code >= 300:
            _log.error("%s service answered %s on %s %s", service, response.status_code, method, path)
            raise Unavailable(
                f"the {service} service could not answer (status {response.status_code})",
                slug=f"{service}-unavailable",
            )
        try:
            return msgspec.json.decode(response.content, type=answer)
        except msgspec.DecodeError as exc:
            _log.error("%s service sent an answer that does not decode: %s", service, exc)
            raise Unavailable(
                f"the {service} service sent an answer that could not be read", slug=f"{service}-unavailable"
            ) from exc

    async def consent_state(self, subject_id: str) -> ConsentState:
        return await self._call("consent", "GET", f"/v1/subjects/{subject_id}/consents", ConsentState)

    async def profile(self, subject_id: str) -> StoredProfile:
        return await self._call("preferences", "GET", f"/v1/subjects/{subject_id}/profile", StoredProfile)

    async def record_consent(
        self, subject_id: str, event: dict[str, Any], *, gpc: bool = False, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/subjects/{subject_id}/events"
        headers = {"Sec-GPC": "1"} if gpc else {}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return await self._call("consent", "POST", path, dict[str, Any], json=event, extra_headers=headers)

    async def confirm_consent(self, confirmation: dict[str, Any]) -> dict[str, Any]:
        return await self._call("consent", "POST", "/v1/confirmations", dict[str, Any], json=confirmation)

    async def decide(self, request: dict[str, Any]) -> RulesDecision:
        """The rules service's decision on an already-filtered profile and a visit's context."""
        return await self._call("rules", "POST", "/v1/decide", RulesDecision, json=request)


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
