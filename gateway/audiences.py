"""Audience export: every subject a purpose may reach now, with only its releasable fields, as NDJSON.

``GET /v1/audiences/{purpose}?format=ndjson`` streams one line per subject whose legal basis for
the purpose holds now, each filtered by the same release rule as a single release
(:func:`gateway.release.decide`). The stream is built a page at a time from keyset-paginated
internal calls, so the gateway's memory does not grow with the audience:

- ``consent`` purposes: the consent service's page of subjects whose consent counts now
  (``GET /v1/purposes/{purpose}/active``), then their profiles in one call
  (``POST /v1/profiles/batch``);
- ``contract`` / ``legitimate_interest``: the preferences service's page of every profile
  (``GET /v1/profiles``); for legitimate interest the consent states of that page, so that an
  objection (a withdrawal) withholds everything;
- ``segment=KEY``: the rules service matches the page's filtered profiles in one call.

The next pages are read while the current one is sent (up to PAGES_AHEAD ahead). Every page is audited (one row per
subject released, in bulk) and committed **before** its lines are written: no data leaves
unaudited. Subjects with nothing releasable are not listed (their identifier would be a release).

Lines::

    {"subject_id": "...", "fields": {...}, "cursor": "...", "withheld": {"phone": "category_not_permitted"}}
    ...
    {"end": {"release_id": "...", "subjects": 1234, "complete": true, "cursor": null}}

Each subject line carries the cursor that resumes the audience right after it
(``&cursor=...``). The last line is always ``end`` (``complete`` false when ``limit`` cut the
audience short; its cursor continues it) or ``error``: when an upstream fails mid-stream the
stream stops with ``{"error": {problem details}}`` — a stream without an ``end`` line is
incomplete, never silently truncated. Before the first byte, a failure is an ordinary 503 problem.

The cursor is the last subject id plus an HMAC (keyed from the gateway's access-token key) over
purpose, segment and subject id: opaque to channels, refused (422) if altered or used for another
purpose or segment.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream

from gateway.api import provide_caller, require_access_token
from gateway.models import AudienceRelease
from gateway.oauth import Caller
from gateway.release import ConsentView, ReleasePlanner, WithheldReason, check_channel_purpose
from gateway.repository import AudienceAuditRepository, AudienceAuditRow
from gateway.upstream import ActiveConsent, StoredProfile, Upstream
from tillit.db import Database
from tillit.keys import ACCESS_TOKEN_KEY, load_private_key
from tillit.patterns import exact
from tillit.policy import Policy
from tillit.problems import Problem, TillitError, Unprocessable, problem_responses, problem_type
from tillit.settings import Settings
from tillit.types import PURPOSE_PATTERN, utcnow

__all__ = [
    "NDJSON",
    "PAGES_AHEAD",
    "PAGE_SIZE",
    "AudienceController",
    "AudienceEnd",
    "AudienceMember",
    "AudienceService",
    "CursorCodec",
]

NDJSON: Final = "application/x-ndjson"
PAGE_SIZE: Final = 2000
"""Subjects per internal page: large enough to amortise a round trip, small enough to stay flat."""
PAGES_AHEAD: Final = 3
"""Pages read ahead of the one being sent (:class:`_PagesAhead`); each holds up to PAGE_SIZE profiles."""
_AUDIT_JSON_CACHE: Final = 4096
_log = logging.getLogger("tillit.gateway.audiences")


class AudienceMember(msgspec.Struct, omit_defaults=True):
    """One line: a subject and the fields released for the purpose; withheld fields by name and reason."""

    subject_id: str
    fields: dict[str, Any]
    cursor: str
    """Pass as ``cursor`` to resume the audience right after this subject."""
    withheld: dict[str, WithheldReason] = msgspec.field(default_factory=dict)
    transformed: dict[str, str] = msgspec.field(default_factory=dict)
    """Released field -> the transform the channel's policy put its value through (e.g. ``sha256_email``)."""


class AudienceSummary(msgspec.Struct):
    release_id: str
    subjects: int
    """Subjects listed by this response."""
    complete: bool
    """False when ``limit`` cut the audience short: resume with ``cursor``."""
    cursor: str | None


class AudienceEnd(msgspec.Struct):
    """The last line of a stream that ended as planned."""

    end: AudienceSummary


class AudienceFailure(msgspec.Struct):
    """The last line of a stream an upstream failure stopped: problem details, nothing after."""

    error: Problem


class CursorCodec:
    """Opaque, tamper-evident resumption points: base64url(subject id) '.' base64url(MAC[:16]).

    The MAC is keyed BLAKE2b (RFC 7693) over purpose, segment and subject id: one line of an audience
    carries one cursor, and HMAC-SHA256 was a quarter of the gateway's CPU per line; BLAKE2b keyed is
    a MAC by design at under half its cost. Cursors issued before (HMAC-SHA256, same layout) still
    resume: a cursor is checked once per request, so checking both costs nothing.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._blake_key = hashlib.sha256(b"tillit audience cursor blake2b\x00" + key).digest()

    @classmethod
    def from_settings(cls, settings: Settings) -> CursorCodec:
        """Keyed from the access-token signing key: every gateway replica shares it, nobody else has it."""
        secret = load_private_key(settings.keys_dir, ACCESS_TOKEN_KEY).as_dict(private=True)["d"]
        return cls(hashlib.sha256(b"tillit audience cursor v1\x00" + str(secret).encode()).digest())

    @staticmethod
    def _scope(purpose: str, segment: str | None) -> bytes:
        return f"{purpose}\x00{segment or ''}\x00".encode()

    def signer(self, purpose: str, segment: str | None) -> Callable[[str], str]:
        """A function that makes the cursor of a subject for this purpose and segment.

        The keyed state with the scope absorbed is made once and copied per subject: the same MAC as
        BLAKE2b over scope and subject id, without setting up the key for every line (1.16 -> 0.83 µs).
        """
        keyed = hashlib.blake2b(self._scope(purpose, segment), key=self._blake_key, digest_size=16)

        def sign(subject_id: str) -> str:
            raw = subject_id.encode()
            mac = keyed.copy()
            mac.update(raw)
            return f"{_b64(raw)}.{_b64(mac.digest())}"

        return sign

    def _legacy_cursor(self, subject_id: str, purpose: str, segment: str | None) -> str:
        raw = subject_id.encode()
        return f"{_b64(raw)}.{_b64(hmac.digest(self._key, self._scope(purpose, segment) + raw, 'sha256')[:16])}"

    def subject_after(self, cursor: str, purpose: str, segment: str | None) -> str:
        """The subject a cursor resumes after; 422 if it was altered or made for another audience."""
        encoded, _, _ = cursor.partition(".")
        try:
            subject_id = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            subject_id = ""
        genuine = bool(subject_id) and (
            hmac.compare_digest(self.signer(purpose, segment)(subject_id), cursor)
            or hmac.compare_digest(self._legacy_cursor(subject_id, purpose, segment), cursor)
        )
        if not genuine:
            raise Unprocessable(
                "the cursor is not one this gateway issued for this purpose and segment; "
                "resume with the cursor of a line of the same audience, or start without one",
                slug="invalid-cursor",
            )
        return subject_id


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64(raw: bytes) -> str:
    """base64url without padding (as ``base64.urlsafe_b64encode`` and a strip, in fewer calls)."""
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


@dataclass(slots=True)
class _Member:
    subject_id: str
    fields: dict[str, Any]
    withheld: dict[str, WithheldReason]
    transformed: dict[str, str]
    audit: tuple[str, str]
    consent_event_id: str | None


@dataclass(slots=True)
class _Page:
    members: list[_Member]
    last: str | None
    """The last subject examined (members or not); the next page starts after it. None: the end."""
    decided_at: datetime


@dataclass
class _Examined:
    """A page after its first read: the consents that count (consent purposes) or the profiles."""

    active: list[ActiveConsent] | None
    profiles: list[StoredProfile] | None
    last: str | None


class _PagesAhead:
    """The pages after the first of an export without a limit, read up to ``depth`` pages ahead.

    Why: an export is a chain of round trips (consent, then profiles, then the audit) and one page
    ahead left the processes mostly waiting on each other — under ``bench.audience`` all of them
    together used under one of the two cores. Only a page's first read moves the keyset on, so it
    runs ahead on its own, and each page's other reads and decisions start as soon as it returns.
    Pages come out in order; a failure comes out in its page's place; nothing is audited or sent
    here (the caller audits each page before its lines go out). With a limit the caller keeps to one
    page ahead, as the limit depends on how many subjects the pages before listed.
    """

    def __init__(self, export: _Export, after: str, depth: int) -> None:
        self._export = export
        self._pages: asyncio.Queue[asyncio.Future[_Page] | None] = asyncio.Queue(maxsize=depth)
        self._reader = asyncio.create_task(self._read_from(after))

    async def _read_from(self, after: str | None) -> None:
        export = self._export
        size = export.service.page_size
        try:
            while after is not None:
                examined = await export.examine(after, size)
                await self._pages.put(asyncio.create_task(export.complete(examined)))
                after = examined.last
        except Exception as exc:
            failed: asyncio.Future[_Page] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            await self._pages.put(failed)
            return
        await self._pages.put(None)

    async def next(self) -> _Page | None:
        """The next page, None after the last; raises as its reads did."""
        page = await self._pages.get()
        return None if page is None else await page

    def close(self) -> None:
        self._reader.cancel()
        while not self._pages.empty():
            page = self._pages.get_nowait()
            if page is None:
                continue
            if page.done() and not page.cancelled():
                page.exception()  # retrieved: a failure after the one answered is not logged as lost
            page.cancel()


@dataclass
class _Export:
    """One audience response: its pages, audit and lines."""

    service: AudienceService
    caller: Caller
    purpose: str
    segment: str | None
    after: str
    limit: int | None
    release_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    listed: int = 0
    _sign: Callable[[str], str] = field(init=False)
    _planner: ReleasePlanner = field(init=False)
    _per_verdict: dict[int, tuple[object, dict[str, WithheldReason], tuple[str, str]]] = field(default_factory=dict)
    _encoder: msgspec.json.Encoder = field(default_factory=msgspec.json.Encoder)
    _last_listed: str | None = None

    def __post_init__(self) -> None:
        self._sign = self.service.cursors.signer(self.purpose, self.segment)
        self._planner = ReleasePlanner(self.service.policy, self.purpose, self.caller.channel)

    def _page_size(self) -> int:
        if self.limit is None:
            return self.service.page_size
        return max(1, min(self.service.page_size, self.limit - self.listed))

    async def fetch(self, after: str, size: int) -> _Page:
        """Decide one page: who counts, their filtered fields, the segment's verdict. Nothing is written."""
        return await self.complete(await self.examine(after, size))

    async def examine(self, after: str, size: int) -> _Examined:
        """The page's first read, the one that moves the keyset on: whose consent counts, or every profile."""
        service = self.service
        upstream = service.upstream
        if service.policy.purposes[self.purpose].legal_basis == "consent":
            active = (await upstream.active_consents(self.purpose, after, size)).consents
            last = active[-1].subject_id if len(active) == size else None
            return _Examined(active, None, last)
        page = await upstream.profile_page(after, size)
        return _Examined(None, page.profiles, page.last)

    async def complete(self, examined: _Examined) -> _Page:
        """The rest of the page's reads (profiles, or consent states; the segment) and its decisions."""
        service = self.service
        upstream = service.upstream
        views: dict[str, ConsentView | None] = {}
        if examined.active is not None:
            if not examined.active:
                return _Page([], None, service.clock())
            for row in examined.active:
                views[row.subject_id] = ConsentView("given", True, row.event_id, row.expires_at)
            profiles = (await upstream.profiles([row.subject_id for row in examined.active])).profiles
        else:
            profiles = examined.profiles or []
            if profiles and service.policy.purposes[self.purpose].legal_basis == "legitimate_interest":
                states = await upstream.purpose_states(self.purpose, [p.subject_id for p in profiles])
                views = {state.subject_id: state for state in states.states}
        now = service.clock()
        members = [member for profile in profiles if (member := self._decide(profile, views, now)) is not None]
        if self.segment is not None and members:
            matched = await upstream.segment_matches(self.segment, self.purpose, [m.fields for m in members])
            members = [members[index] for index in matched]
        return _Page(members, examined.last, now)

    def _decide(self, profile: StoredProfile, views: dict[str, Any], now: datetime) -> _Member | None:
        decision, verdict = self._planner.decide_with_verdict(profile.fields, views.get(profile.subject_id), now)
        if not decision.released:
            return None
        # The withheld fields and the audit's JSON depend only on the verdict: worked out once per
        # verdict, not per profile (~a tenth of the gateway's CPU per line, py-spy). The entry holds
        # the verdict, so no other object can take its id while the entry is kept.
        shared = self._per_verdict.get(id(verdict))
        if shared is None or shared[0] is not verdict:
            withheld = {w.field: w.reason for w in decision.withheld}
            audit = (
                msgspec.json.encode(list(decision.released)).decode(),
                msgspec.json.encode([{"field": name, "reason": reason} for name, reason in withheld.items()]).decode(),
            )
            shared = (verdict, withheld, audit)
            if len(self._per_verdict) < _AUDIT_JSON_CACHE:
                self._per_verdict[id(verdict)] = shared
        return _Member(
            profile.subject_id, decision.released, shared[1], decision.transformed, shared[2], decision.consent_event_id
        )

    async def audit(self, page: _Page, *, first: bool) -> None:
        """Commit the page's audit rows (and, with the first page, the export's own row) in one transaction."""
        rows: list[AudienceAuditRow] = [
            (m.subject_id, m.audit[0], m.audit[1], m.consent_event_id) for m in page.members
        ]
        if not rows and not first:
            return
        async with self.service.database.sessionmaker() as session, session.begin():
            repository = AudienceAuditRepository(session)
            if first:
                await repository.open(
                    AudienceRelease(
                        release_id=self.release_id,
                        client_id=self.caller.client_id,
                        channel=self.caller.channel,
                        purpose=self.purpose,
                        segment=self.segment,
                        resumed_after=self.after or None,
                        started_at=page.decided_at,
                    )
                )
            await repository.record_subjects(self.release_id, page.decided_at, rows)

    def _trim(self, page: _Page) -> bool:
        """Cut the page at ``limit``; True when the limit is reached (the response ends after it)."""
        if self.limit is None or self.listed + len(page.members) < self.limit:
            return False
        del page.members[self.limit - self.listed :]
        return True

    def encode(self, page: _Page) -> bytes:
        buffer = bytearray()
        encode_into, sign = self._encoder.encode_into, self._sign
        for m in page.members:
            member = AudienceMember(m.subject_id, m.fields, sign(m.subject_id), m.withheld, m.transformed)
            encode_into(member, buffer, -1)
            buffer += b"\n"
        if page.members:
            self.listed += len(page.members)
            self._last_listed = page.members[-1].subject_id
        return bytes(buffer)

    async def first_page(self) -> tuple[_Page, bool]:
        """Fetch, trim and audit the first page: any failure here is still an ordinary problem answer."""
        page = await self.fetch(self.after, self._page_size())
        limited = self._trim(page)
        await self.audit(page, first=True)
        return page, limited

    async def lines(self, page: _Page, limited: bool, path: str) -> AsyncIterator[bytes]:
        prefetch: asyncio.Task[_Page] | None = None
        ahead: _PagesAhead | None = None
        try:
            if self.limit is None and page.last is not None:
                ahead = _PagesAhead(self, page.last, PAGES_AHEAD)
            else:
                prefetch = self._prefetch_after(page, limited)
            while True:
                if page.members:
                    yield self.encode(page)
                if ahead is not None:
                    following = await ahead.next()
                    if following is None:
                        break
                    page = following
                else:
                    if prefetch is None:
                        break
                    page, prefetch = await prefetch, None
                    limited = self._trim(page)
                    # The page after this one is fetched while this one's audit commits and its lines go out.
                    prefetch = self._prefetch_after(page, limited)
                await self.audit(page, first=False)
            cursor = self._sign(self._last_listed) if limited and self._last_listed else None
            yield self._line(AudienceEnd(AudienceSummary(self.release_id, self.listed, not limited, cursor)))
        except TillitError as exc:
            _log.warning("audience %s stopped after %d subjects: %s", self.release_id, self.listed, exc.detail)
            problem = Problem(problem_type(exc.slug), exc.title, exc.status_code, exc.detail, instance=path)
            yield self._line(AudienceFailure(problem))
        except Exception:
            _log.exception("audience %s failed after %d subjects", self.release_id, self.listed)
            detail = "the audience could not be completed; resume from the cursor of the last line received"
            problem = Problem(problem_type("internal"), "Internal error", 500, detail, instance=path)
            yield self._line(AudienceFailure(problem))
        finally:
            if prefetch is not None:
                prefetch.cancel()
            if ahead is not None:
                ahead.close()

    def _prefetch_after(self, page: _Page, limited: bool) -> asyncio.Task[_Page] | None:
        if page.last is None or limited:
            return None
        return asyncio.create_task(self.fetch(page.last, self._page_size_after(page)))

    def _page_size_after(self, page: _Page) -> int:
        if self.limit is None:
            return self.service.page_size
        remaining = self.limit - self.listed - len(page.members)
        return max(1, min(self.service.page_size, remaining))

    def _line(self, value: Any) -> bytes:
        return self._encoder.encode(value) + b"\n"


class AudienceService:
    def __init__(
        self,
        policy: Policy,
        upstream: Upstream,
        database: Database,
        cursors: CursorCodec,
        clock: Callable[[], datetime] = utcnow,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.policy = policy
        self.upstream = upstream
        self.database = database
        self.cursors = cursors
        self.clock = clock
        self.page_size = page_size

    def _check(self, caller: Caller, purpose: str) -> None:
        caller.require("audiences:read")
        check_channel_purpose(self.policy, caller.channel, purpose)

    async def open(
        self, caller: Caller, purpose: str, segment: str | None, cursor: str | None, limit: int | None
    ) -> tuple[_Export, _Page, bool]:
        """Check the request and prepare (and audit) the first page; the stream starts only after this."""
        self._check(caller, purpose)
        after = self.cursors.subject_after(cursor, purpose, segment) if cursor else ""
        if segment is not None:
            await self.upstream.segment_matches(segment, purpose, [])
        export = _Export(self, caller, purpose, segment, after, limit)
        page, limited = await export.first_page()
        return export, page, limited


def provide_audience_service(state: State) -> AudienceService:
    cursors = state.get("audience_cursors")
    if cursors is None:
        cursors = state.audience_cursors = CursorCodec.from_settings(state.settings)
    return AudienceService(state.policy, state.upstream, state.database, cursors)


AudienceFormat = Annotated[
    Literal["ndjson"], Parameter(description="The only format: newline-delimited JSON, one subject per line")
]
SegmentQuery = Annotated[
    str | None,
    Parameter(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"), description="Only subjects in this segment (rules service)"),
]
CursorQuery = Annotated[
    str | None,
    Parameter(
        pattern=exact(r"^[A-Za-z0-9_-]{2,88}\.[A-Za-z0-9_-]{22}$"),
        max_length=120,
        description="Resume after the subject of the line that carried this cursor",
    ),
]
LimitQuery = Annotated[
    int | None,
    Parameter(ge=1, le=100_000_000, description="At most this many subjects; the end line's cursor continues"),
]
PurposePath = Annotated[
    str, Parameter(pattern=PURPOSE_PATTERN, min_length=1, max_length=100, description="The one purpose")
]


class AudienceController(Controller):
    path = "/v1/audiences"
    tags = ["audiences"]
    guards = [require_access_token]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "audiences": Provide(provide_audience_service, sync_to_thread=False),
    }

    @get(
        "/{purpose:str}",
        summary="Every subject the purpose may reach now, with only its releasable fields (NDJSON stream)",
        description=__doc__,
        media_type=NDJSON,
        responses={
            200: ResponseSpec(
                data_container=AudienceMember,
                media_type=NDJSON,
                description=(
                    'One AudienceMember per line, then one last line: {"end": {...}} or, if an upstream '
                    'failed mid-stream, {"error": {problem details}}'
                ),
                generate_examples=False,
            ),
            **problem_responses(400, 401, 403, 422, 503, 429),
        },
    )
    async def audience(
        self,
        request: Request[Any, Any, Any],
        purpose: PurposePath,
        caller: Caller,
        audiences: AudienceService,
        format: AudienceFormat,
        segment: SegmentQuery = None,
        cursor: CursorQuery = None,
        limit: LimitQuery = None,
    ) -> Stream:
        del format
        export, page, limited = await audiences.open(caller, purpose, segment, cursor, limit)
        return Stream(
            export.lines(page, limited, request.url.path),
            media_type=NDJSON,
            headers={"Tillit-Release-Id": export.release_id, "Cache-Control": "no-store"},
        )
