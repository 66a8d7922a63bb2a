"""Calls from the gateway to the internal services, with service tokens and fail-closed errors.

Anything that keeps the gateway from knowing the consent state or the profile for sure — a
refused connection, a timeout, a 5xx, an answer that does not decode — becomes 503 and no field
is released.

Reads (the release's batches, audience pages, the change feed, the shopper API's GETs) and the
decision go through the lean HTTP/1.1 client (``tillit.http1``); writes and segment matches through
one ``aiohttp.ClientSession`` with a pool of keep-alive connections per service. Measured with
``bench.gateway`` (two calls per release, 32 channel connections): a default
``httpx.AsyncClient`` cost the gateway ~9 ms of CPU per release, most of it in httpcore's pool walking
every connection's ``has_expired`` through anyio on each request; httpx over ``httpx-aiohttp``'s
transport ~2.6 ms; aiohttp alone, with the answer decoded straight from its bytes by msgspec, less
(see ``bench/README.md``). Nothing is logged per call; only failures are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
import msgspec

from gateway.candidate_lists import KnownLists
from gateway.release import ConsentView
from gateway.schemas import RulesDecision
from tillit.call_batch import CallBatcher
from tillit.http1 import HTTP1Pool, UpstreamTransportError
from tillit.problems import NotFound, TillitError, Unavailable, Unprocessable
from tillit.read_batch import Linger, ReadBatcher
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import Settings

__all__ = [
    "ActiveConsent",
    "ActiveConsents",
    "ConsentState",
    "HeldLists",
    "ProfileBatch",
    "ProfilePage",
    "PurposeStates",
    "StoredProfile",
    "SubjectPurposeState",
    "Upstream",
]

_log = logging.getLogger("tillit.gateway.upstream")
T = TypeVar("T")

POOL_PER_SERVICE: Final = 64
"""Keep-alive connections to one service: two calls per release at 32 channel connections never wait."""
_KEEPALIVE_SECONDS: Final = 30.0
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
_encode = msgspec.json.Encoder().encode
_PATH_SAFE: Final = "/:@-._~!$&'()*+,;=%"


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


class ActiveConsent(msgspec.Struct):
    """One subject whose consent to the purpose counts now (a row of an audience page)."""

    subject_id: str
    event_id: str
    notice_version: int | None = None
    expires_at: datetime | None = None


class ActiveConsents(msgspec.Struct):
    consents: list[ActiveConsent]


class ProfileBatch(msgspec.Struct):
    profiles: list[StoredProfile]


class ProfilePage(msgspec.Struct):
    profiles: list[StoredProfile]
    last: str | None = None


class SubjectPurposeState(PurposeState, frozen=True):
    subject_id: str = ""


class PurposeStates(msgspec.Struct):
    states: list[SubjectPurposeState]


class _SubjectIds(msgspec.Struct):
    subject_ids: list[str]


class _SegmentMatch(msgspec.Struct):
    matches: list[int]


class HeldLists:
    """The SHA-256 digests (hex) of candidate lists the rules service said it holds, the most
    recently used ``entries`` kept. Digests of product lists only: no subject id, nothing personal.

    Bounded (each entry is a 64-character string): a digest forgotten here only means its list is
    sent again, with the digest, and remembered again if the service still holds it. The rules
    service holds up to 64 lists per replica; a few times that covers several replicas' sets.
    """

    def __init__(self, entries: int = 1024) -> None:
        self._digests: dict[str, None] = {}
        self._entries = entries

    def held(self, digest: str) -> bool:
        """Whether ``digest`` is remembered (it is then the most recently used)."""
        if self._digests.pop(digest, False) is None:
            self._digests[digest] = None
            return True
        return False

    def __len__(self) -> int:
        return len(self._digests)

    def remember(self, digest: str) -> None:
        self._digests.pop(digest, None)
        self._digests[digest] = None
        if len(self._digests) > self._entries:
            del self._digests[next(iter(self._digests))]

    def forget(self, digest: str) -> None:
        self._digests.pop(digest, None)


class _DecisionBatchAnswer(msgspec.Struct):
    """The rules service's answer to ``POST /v1/decide/batch``: one result per request, in order."""

    results: list[RulesDecision | None]


class _UpstreamProblem(TillitError):
    """A 4xx answer from a service, passed on to the caller as it came."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("detail") or "the request was refused"))
        self.status_code = status  # type: ignore[misc]
        self.title = str(body.get("title") or "Refused")  # type: ignore[misc]
        slug = str(body.get("type") or "").rsplit(":", 1)[-1]
        self.slug = slug or "refused"  # type: ignore[misc]


class Upstream:
    """The gateway's client of the internal services; one per process, closed on shutdown."""

    def __init__(self, settings: Settings, issuer: ServiceTokenIssuer) -> None:
        self._settings = settings
        self._issuer = issuer
        self._timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._plain = HTTP1Pool(POOL_PER_SERVICE, settings.upstream_timeout)
        """The two reads of every release (consent state, profile): see tillit.http1."""
        self._consent_batches: dict[str, ReadBatcher[str, SubjectPurposeState]] = {}
        self._profile_batch: ReadBatcher[str, StoredProfile] = ReadBatcher(
            self._fetch_profiles, lambda exc: _batch_failure("preferences", exc), linger=self._linger()
        )
        self._decision_batch: CallBatcher[dict[str, Any], RulesDecision | None] = CallBatcher(
            self._decide_batch, lambda exc: _batch_failure("rules", exc), linger=self._linger()
        )
        self.known_lists = KnownLists()
        """Recent candidate lists with their digests (see gateway.candidate_lists)."""
        self._held_lists = HeldLists()
        """Digests of the candidate lists the rules service said it holds (see :meth:`decide`)."""

    def _linger(self) -> Linger:
        """How long a batch of release reads may wait for company (see tillit.read_batch.Linger)."""
        return Linger(self._settings.batch_linger_seconds)

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use: aiohttp binds it to the running event loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,
                    limit_per_host=POOL_PER_SERVICE,
                    keepalive_timeout=_KEEPALIVE_SECONDS,
                    ttl_dns_cache=None,
                ),
                timeout=self._timeout,
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        for batcher in (*self._consent_batches.values(), self._profile_batch):
            await batcher.close()
        await self._decision_batch.close()
        await self._plain.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        service: str,
        method: str,
        path: str,
        answer: type[T],
        extra_headers: dict[str, str] | None = None,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        plain: bool = False,
        read_only: bool = False,
    ) -> T:
        """One call; ``plain`` ones (the release's reads, the decision) go through the lean HTTP/1.1 client."""
        url = f"{self._settings.url_of(service)}{path}"
        headers = self._issuer.headers_for(service)
        if json is not None:
            headers.update(_JSON_HEADERS)
        if extra_headers:
            headers.update(extra_headers)
        body = _encode(json) if json is not None else None
        try:
            if plain:
                target = quote(path, _PATH_SAFE)
                if params:
                    target = f"{target}?{urlencode(_query(params))}"
                base = self._settings.url_of(service)
                try:
                    status, content = await self._plain.request(method, base, target, headers, body)
                except UpstreamTransportError:
                    if not read_only:
                        raise
                    # A batch read is a POST, which the pool never sends twice; it only reads, so a
                    # keep-alive connection the service closed meanwhile costs one more try, as a GET's does.
                    status, content = await self._plain.request(method, base, target, headers, body)
            else:
                async with self._client().request(
                    method, url, headers=headers, data=body, params=_query(params) if params else None
                ) as response:
                    status = response.status
                    content = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            _log.warning("%s service unreachable: %s: %s", service, type(exc).__name__, exc)
            raise Unavailable(
                f"the {service} service cannot be reached, so nothing can be decided or released",
                slug=f"{service}-unavailable",
            ) from exc
        if status == 404 and service == "preferences":
            raise NotFound("no profile is held for this subject", slug="profile-not-found")
        if 400 <= status < 500 and status not in (401, 403):
            raise _UpstreamProblem(status, _json_or_empty(content))
        if status >= 300:
            _log.error("%s service answered %s on %s %s", service, status, method, path)
            raise Unavailable(
                f"the {service} service could not answer (status {status})",
                slug=f"{service}-unavailable",
            )
        try:
            return msgspec.json.decode(content, type=answer)
        except msgspec.DecodeError as exc:
            _log.error("%s service sent an answer that does not decode: %s", service, exc)
            raise Unavailable(
                f"the {service} service sent an answer that could not be read", slug=f"{service}-unavailable"
            ) from exc

    async def request(
        self,
        service: str,
        method: str,
        path: str,
        answer: type[T],
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> T:
        """Any call to a service, failing closed like the rest (the shopper API's proxying uses it).

        A ``GET`` goes through the lean HTTP/1.1 client like the release's reads: under the preference
        center's pages, aiohttp's request machinery was ~20 % of the gateway's CPU per ``/v1/me`` call.
        """
        plain = method == "GET" and json is None
        return await self._call(service, method, path, answer, headers, json=json, params=params, plain=plain)

    async def consent_state(self, subject_id: str) -> ConsentState:
        return await self._call("consent", "GET", f"/v1/subjects/{subject_id}/consents", ConsentState, plain=True)

    async def release_reads(self, subject_id: str, purpose: str) -> tuple[ConsentView | None, StoredProfile]:
        """The subject's consent state for ``purpose`` (None: none held) and profile, for one release.

        Both are read in batches of releases (:mod:`tillit.read_batch`), each by a request sent after
        this call began. The consent state is ``consent_state(subject_id).for_purpose(purpose)``: the
        batch read derives it (expiry, re-consent after a material notice, pending, withdrawn) as the
        single read does. A failed batch is a 503 for every release in it; a consent failure outranks
        a missing profile (404 profile-not-found).
        """
        batcher = self._consent_batches.get(purpose)
        if batcher is None:
            batcher = self._consent_batches[purpose] = ReadBatcher(
                lambda subject_ids: self._fetch_consents(purpose, subject_ids),
                lambda exc: _batch_failure("consent", exc),
                linger=self._linger(),
            )
        consent, profile = await asyncio.gather(
            batcher.submit(subject_id), self._profile_batch.submit(subject_id), return_exceptions=True
        )
        if isinstance(consent, BaseException):
            raise consent
        if isinstance(profile, BaseException):
            raise profile
        if profile is None:
            raise NotFound("no profile is held for this subject", slug="profile-not-found")
        return consent, profile

    async def _fetch_consents(self, purpose: str, subject_ids: list[str]) -> dict[str, SubjectPurposeState]:
        path = f"/v1/purposes/{purpose}/states"
        answer = await self._call(
            "consent", "POST", path, PurposeStates, json=_SubjectIds(subject_ids), plain=True, read_only=True
        )
        return {state.subject_id: state for state in answer.states}

    async def _fetch_profiles(self, subject_ids: list[str]) -> dict[str, StoredProfile]:
        path = "/v1/profiles/batch"
        answer = await self._call(
            "preferences", "POST", path, ProfileBatch, json=_SubjectIds(subject_ids), plain=True, read_only=True
        )
        return {profile.subject_id: profile for profile in answer.profiles}

    async def consent_changes(self, after: int, limit: int, answer: type[T]) -> T:
        """The consent change feed after position ``after`` (read by the webhook dispatcher)."""
        params = {"after": after, "limit": limit}
        return await self._call("consent", "GET", "/v1/changes", answer, params=params, plain=True)

    async def profile(self, subject_id: str) -> StoredProfile:
        path = f"/v1/subjects/{subject_id}/profile"
        return await self._call("preferences", "GET", path, StoredProfile, plain=True)

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
        """The rules service's decision on an already-filtered profile and a visit's context.

        ``request["candidates"]`` (if any) is the caller's JSON (``msgspec.Raw``). It goes with its
        SHA-256 as ``candidates_digest``, and once the rules service answered that it holds that
        list (``candidates_held``), the digest goes alone (~0.5 KB, not ~24 KB for 200 products), in
        a ``POST /v1/decide/batch`` with the other decisions in flight: :class:`HeldLists` remembers
        which lists. A digest alone that the batch leaves to ``POST /v1/decide`` (``null``: the
        service restarted, dropped the table, another replica behind the same URL answered, or the
        request has another problem) makes it forget the digest and send the list with it there;
        that answer, or any other failure, is final, as before. With several replicas each one that
        lacks the list costs one such extra round trip and then holds it too (at once while its cache
        has room, else as that cache admits lists): they converge, and a list's digest is no
        personal data.
        """
        candidates = request.get("candidates")
        if not isinstance(candidates, msgspec.Raw):
            return await self._decide_small(request)
        digest = self.known_lists.digest(candidates)
        held = self._held_lists
        if held.held(digest):
            alone = {key: value for key, value in request.items() if key != "candidates"}
            alone["candidates_digest"] = digest
            decided = await self._decision_batch.call(alone)
            if decided is not None:
                if not decided.candidates_held:
                    held.forget(digest)
                return decided
            held.forget(digest)
        answer = await self._call(
            "rules", "POST", "/v1/decide", RulesDecision, json={**request, "candidates_digest": digest}, plain=True
        )
        if answer.candidates_held:
            held.remember(digest)
        return answer

    async def _decide_small(self, request: dict[str, Any]) -> RulesDecision:
        """A decision request without a candidate list in it (~0.5 KB): in one ``POST /v1/decide/batch``
        with the others in flight (each rules call costs the service ~60 µs of CPU before any rule
        runs: the server, the system calls, the token). One the batch leaves to ``POST /v1/decide``
        (``null``: a request it refuses) is sent there alone, for its own answer or problem."""
        answer = await self._decision_batch.call(request)
        if answer is None:
            answer = await self._call("rules", "POST", "/v1/decide", RulesDecision, json=request, plain=True)
        return answer

    async def _decide_batch(self, requests: list[dict[str, Any]]) -> list[RulesDecision | None]:
        try:
            answer = await self._call(
                "rules", "POST", "/v1/decide/batch", _DecisionBatchAnswer, json={"decisions": requests}, plain=True
            )
        except _UpstreamProblem:  # a batch it refuses says nothing of each request: each goes alone
            return [None] * len(requests)
        return answer.results

    async def active_consents(self, purpose: str, after: str, limit: int) -> ActiveConsents:
        """A keyset page of the subjects whose consent to ``purpose`` counts now (audiences)."""
        params = {"after": after, "limit": limit}
        path = f"/v1/purposes/{purpose}/active"
        return await self._call("consent", "GET", path, ActiveConsents, params=params, plain=True)

    async def purpose_states(self, purpose: str, subject_ids: Sequence[str]) -> PurposeStates:
        path = f"/v1/purposes/{purpose}/states"
        body = {"subject_ids": subject_ids}
        return await self._call("consent", "POST", path, PurposeStates, json=body, plain=True, read_only=True)

    async def profiles(self, subject_ids: Sequence[str]) -> ProfileBatch:
        """The profiles of these subjects (at most 5000); subjects without one are absent."""
        body = {"subject_ids": subject_ids}
        return await self._call(
            "preferences", "POST", "/v1/profiles/batch", ProfileBatch, json=body, plain=True, read_only=True
        )

    async def profile_page(self, after: str, limit: int) -> ProfilePage:
        """A keyset page of every profile in subject order."""
        params = {"after": after, "limit": limit}
        return await self._call("preferences", "GET", "/v1/profiles", ProfilePage, params=params, plain=True)

    async def segment_matches(self, segment: str, purpose: str, profiles: Sequence[dict[str, Any]]) -> list[int]:
        """Positions of the filtered ``profiles`` that ``segment`` matches; an unknown segment is a 422."""
        path = f"/v1/segments/{segment}/match"
        try:
            answer = await self._call(
                "rules", "POST", path, _SegmentMatch, json={"purpose": purpose, "profiles": profiles}
            )
        except _UpstreamProblem as exc:
            if exc.status_code == 404:
                raise Unprocessable(f"no segment {segment!r} is defined", slug="unknown-segment") from exc
            raise
        return answer.matches


def _query(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters as httpx would send them: lists repeat the key, booleans are lower case, None is empty."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            if isinstance(item, bool):
                pairs.append((key, "true" if item else "false"))
            else:
                pairs.append((key, "" if item is None else str(item)))
    return pairs


def _batch_failure(service: str, exc: BaseException) -> Unavailable:
    """One release's error when its batched read failed: always 503, never another status.

    A 4xx or 404 answer to a batch says nothing about the one subject, so it is not passed on.
    """
    if isinstance(exc, Unavailable):
        problem = Unavailable(exc.detail, slug=exc.slug)
    else:
        problem = Unavailable(
            f"the {service} service could not answer, so nothing can be decided or released",
            slug=f"{service}-unavailable",
        )
    problem.__cause__ = exc
    return problem


def _json_or_empty(content: bytes) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return {}
    return body if isinstance(body, dict) else {}
