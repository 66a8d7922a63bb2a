"""The shopper API's logic: a preference link becomes a short session; the session acts on its own subject only.

Every method takes the :class:`~gateway.shopper.tokens.Shopper` from a verified token and uses its
subject; nothing a request carries (path, query, body) can name another subject. Objects the
services hand out by id (quiz sessions, receipts) are checked to belong to that subject, and one that
does not is answered exactly like one that does not exist (404). Everything else the services hold
is proxied through :class:`gateway.upstream.Upstream`, which fails closed (503) when one is down.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import msgspec
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.links import LinkKeys
from gateway.models import AudienceRelease, AudienceReleaseSubject, ReleaseRecord
from gateway.ratelimit import TokenBucket
from gateway.shopper.schemas import (
    EDITABLE_FIELDS,
    AnswerIn,
    ConsentChange,
    ConsentChangeOut,
    ConsentEvent,
    ConsentHistoryOut,
    FieldValue,
    LinkRequestAccepted,
    MyConsent,
    MyConsents,
    MyExport,
    MyProfile,
    MyRequest,
    MyRequests,
    NewRequest,
    ProfileEdit,
    QuestionOut,
    QuizList,
    QuizSessionList,
    QuizSessionSummary,
    QuizSessionView,
    QuizStep,
    Recipient,
    ShopperSession,
    StartQuiz,
)
from gateway.shopper.tokens import Shopper, ShopperTokens
from gateway.upstream import Upstream
from gateway.webhooks.dispatcher import enqueue_gateway_event
from tillit.links import LinkError, verify_lapsed_preference_link, verify_preference_link
from tillit.policy import Policy
from tillit.problems import (
    Conflict,
    Gone,
    NotFound,
    TillitError,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from tillit.types import SUBJECT_ID_PATTERN, as_utc, utcnow

__all__ = [
    "LINK_REQUEST_GRACE",
    "PAGE_SOURCE",
    "Evidence",
    "ShopperLimits",
    "ShopperService",
]

T = TypeVar("T")

PAGE_SOURCE: Final = "preference_page"
LINK_REQUEST_GRACE: Final = timedelta(days=30)
"""How long after a preference link expired it may still ask for a new one."""
MAX_RECIPIENTS: Final = 10_000
_SUBJECT: Final = re.compile(SUBJECT_ID_PATTERN)
_RECEIPTED: Final = frozenset({"given", "withdrawn"})
_OPEN_REQUEST: Final = frozenset({"received", "verified", "in_progress"})


class Evidence(msgspec.Struct, omit_defaults=True):
    """What the preference center forwards about the shopper's browser; stored as consent evidence."""

    ip: str | None = None
    user_agent: str | None = None
    page: str | None = None
    language: str | None = None


class ShopperLimits:
    """Per-subject token buckets in this process: ``/v1/me`` calls, session openings, new-link requests.

    Keyed by subject (the preference center sits in front, so every shopper shares its address).
    Like the channel limits, they live in one gateway's memory and scale by ``TILLIT_RATE_LIMIT_SCALE``.
    """

    LIMITS: Final = {"me": (120, 60.0), "session": (20, 600.0), "link-request": (3, 3600.0)}

    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.scale = scale
        self.clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(self, kind: str, subject_id: str) -> None:
        requests, seconds = self.LIMITS[kind]
        now = self.clock()
        key = (kind, subject_id)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            bucket = self._buckets[key] = TokenBucket(
                max(1.0, requests * self.scale), requests * self.scale / seconds, now
            )
        wait = bucket.take(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"too many requests for this shopper; retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )


# --- what the services answer (only what is used) ------------------------------------------------


class _Provenance(msgspec.Struct):
    source: str
    updated_at: datetime


class _Profile(msgspec.Struct):
    fields: dict[str, Any]
    provenance: dict[str, _Provenance] = {}


class _ConsentState(msgspec.Struct):
    purpose: str
    status: str
    active: bool
    since: datetime
    event_id: str
    notice_version: int | None = None
    expires_at: datetime | None = None
    needs_reconsent: bool = False


class _SubjectConsents(msgspec.Struct):
    consents: list[_ConsentState]


class _Confirmation(msgspec.Struct):
    token: str
    expires_at: datetime


class _Recorded(msgspec.Struct):
    state: _ConsentState
    receipt: str | None = None
    confirmation: _Confirmation | None = None


class _LedgerEvent(msgspec.Struct):
    id: str
    purpose: str
    action: str
    source: str
    notice_version: int | None
    collected_at: datetime


class _History(msgspec.Struct):
    events: list[_LedgerEvent]


class _Receipt(msgspec.Struct):
    event_id: str
    receipt: str


class _Progress(msgspec.Struct):
    answered: int
    total: int


class _QuizSession(msgspec.Struct):
    id: str
    subject_id: str
    quiz_id: str
    version: int
    locale: str
    status: str
    current_question: QuestionOut | None
    previous_answer: Any
    answers: dict[str, Any]
    progress: _Progress
    started_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None = None
    traits: dict[str, Any] | None = None


class _ExportSections(msgspec.Struct):
    profile_history: list[dict[str, Any]] = []
    quiz_sessions: list[dict[str, Any]] = []


class _PreferencesExport(msgspec.Struct):
    sections: _ExportSections


class _GdprRequest(msgspec.Struct):
    id: str
    type: str
    status: str
    received_at: datetime
    due_at: datetime
    overdue: bool
    closed_at: datetime | None = None
    resolution: str | None = None


class _GdprPage(msgspec.Struct):
    items: list[_GdprRequest]


def _request_out(row: _GdprRequest) -> MyRequest:
    return MyRequest(
        id=row.id,
        type=row.type,
        status=row.status,
        received_at=row.received_at,
        due_at=row.due_at,
        overdue=row.overdue,
        closed_at=row.closed_at,
        resolution=row.resolution,
    )


def _session_view(row: _QuizSession) -> QuizSessionView:
    in_progress = row.status == "in_progress"
    return QuizSessionView(
        id=row.id,
        quiz_id=row.quiz_id,
        version=row.version,
        locale=row.locale,
        status=row.status,
        current_question=row.current_question,
        previous_answer=row.previous_answer,
        answers=row.answers,
        progress=QuizStep(
            step=min(row.progress.answered + 1, max(row.progress.total, 1)),
            answered=row.progress.answered,
            total=row.progress.total,
        ),
        can_go_back=in_progress and row.progress.answered > 0,
        can_complete=in_progress and row.current_question is None,
        started_at=row.started_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        completed_at=row.completed_at,
        traits=row.traits,
    )


class ShopperService:
    def __init__(
        self,
        *,
        policy: Policy,
        upstream: Upstream,
        tokens: ShopperTokens,
        link_keys: LinkKeys,
        limits: ShopperLimits,
        session: AsyncSession | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.policy = policy
        self.upstream = upstream
        self.tokens = tokens
        self.link_keys = link_keys
        self.limits = limits
        self.session = session
        self.clock = clock

    def _db(self) -> AsyncSession:
        if self.session is None:
            raise RuntimeError("this operation needs the gateway database session")
        return self.session

    # --- links and sessions ----------------------------------------------------------------------

    def open_session(self, link_token: str) -> ShopperSession:
        """Exchange a valid preference link for a shopper token (401 tampered, 410 expired)."""
        now = self.clock()
        try:
            link = verify_preference_link(link_token, self.link_keys.public, issuer=self.tokens.issuer, now=now)
        except LinkError as exc:
            if exc.expired:
                raise self._expired(link_token, now) from exc
            raise Unauthorized(
                "this preference link is not valid: it was altered or not issued by this shop", slug="link-invalid"
            ) from exc
        self._check_subject(link.subject_id)
        self.limits.check("session", link.subject_id)
        token, expires_at = self.tokens.issue(link.subject_id, link.link_id, now)
        return ShopperSession(
            access_token=token,
            token_type="Bearer",  # noqa: S106 - the RFC 6750 token type, not a secret
            expires_at=expires_at,
            expires_in=max(0, int((expires_at - now).total_seconds())),
        )

    def _expired(self, link_token: str, now: datetime) -> Gone:
        renewable = True
        try:
            verify_lapsed_preference_link(
                link_token, self.link_keys.public, issuer=self.tokens.issuer, now=now, grace=LINK_REQUEST_GRACE
            )
        except LinkError:
            renewable = False
        detail = "this preference link has expired"
        detail += (
            "; a new one can be sent: POST the same link_token to /v1/shopper/link-requests"
            if renewable
            else ", too long ago to ask for a new one with it"
        )
        return Gone(
            detail,
            slug="link-expired",
            extensions={
                "new_link_available": renewable,
                "new_link_request": "/v1/shopper/link-requests" if renewable else None,
            },
        )

    async def request_link(self, link_token: str) -> LinkRequestAccepted:
        """Ask the shop's channels (webhook ``preference_link.requested``) to send a fresh link.

        The answer is the same whether the subject holds any data or not; only a link the gateway did
        not sign (401) or one expired more than :data:`LINK_REQUEST_GRACE` ago (410) is refused.
        """
        now = self.clock()
        try:
            link = verify_lapsed_preference_link(
                link_token, self.link_keys.public, issuer=self.tokens.issuer, now=now, grace=LINK_REQUEST_GRACE
            )
        except LinkError as exc:
            if exc.expired:
                raise Gone(
                    "this preference link expired too long ago to ask for a new one with it; ask the shop",
                    slug="link-expired",
                    extensions={"new_link_available": False, "new_link_request": None},
                ) from exc
            raise Unauthorized(
                "this preference link is not valid: it was altered or not issued by this shop", slug="link-invalid"
            ) from exc
        self._check_subject(link.subject_id)
        self.limits.check("link-request", link.subject_id)
        await enqueue_gateway_event(self._db(), "preference_link.requested", link.subject_id, None, now)
        return LinkRequestAccepted(
            status="accepted",
            detail="if the shop can reach you, a new link is on its way",
        )

    @staticmethod
    def _check_subject(subject_id: str) -> None:
        if not _SUBJECT.match(subject_id):
            raise Unauthorized("this preference link names no valid subject", slug="link-invalid")

    # --- profile ---------------------------------------------------------------------------------

    async def _profile(self, subject_id: str) -> _Profile:
        try:
            return await self.upstream.request("preferences", "GET", f"/v1/subjects/{subject_id}/profile", _Profile)
        except NotFound:
            return _Profile(fields={})

    @staticmethod
    def _fields(profile: _Profile) -> dict[str, FieldValue]:
        out = {}
        for name, value in sorted(profile.fields.items()):
            provenance = profile.provenance.get(name)
            out[name] = FieldValue(
                value=value,
                source=provenance.source if provenance else None,
                updated_at=provenance.updated_at if provenance else None,
            )
        return out

    async def profile(self, shopper: Shopper) -> MyProfile:
        profile = await self._profile(shopper.subject_id)
        return MyProfile(fields=self._fields(profile), editable=list(EDITABLE_FIELDS))

    async def edit_profile(self, shopper: Shopper, edit: ProfileEdit) -> MyProfile:
        fields = msgspec.to_builtins(edit)
        if not fields:
            raise Unprocessable("name at least one field to change", slug="empty-change")
        profile = await self.upstream.request(
            "preferences",
            "PATCH",
            f"/v1/subjects/{shopper.subject_id}/profile",
            _Profile,
            json={"fields": fields, "source": PAGE_SOURCE},
        )
        return MyProfile(fields=self._fields(profile), editable=list(EDITABLE_FIELDS))

    # --- consents --------------------------------------------------------------------------------

    async def _states(self, subject_id: str) -> dict[str, _ConsentState]:
        answer = await self.upstream.request("consent", "GET", f"/v1/subjects/{subject_id}/consents", _SubjectConsents)
        return {state.purpose: state for state in answer.consents}

    def consent_purposes(self) -> list[str]:
        """The purposes a shopper decides on: those resting on consent, in policy order."""
        return [key for key, purpose in self.policy.purposes.items() if purpose.legal_basis == "consent"]

    async def consents(self, shopper: Shopper, language: str) -> MyConsents:
        states = await self._states(shopper.subject_id)
        now = self.clock()
        items = []
        for key in self.consent_purposes():
            purpose = self.policy.purposes[key]
            notice = self.policy.current_notice(key, now)
            text = notice.text_in(language) if notice is not None else None
            state = states.get(key)
            items.append(
                MyConsent(
                    purpose=key,
                    title=text.title if text else purpose.title,
                    notice_text=text.text if text else purpose.description,
                    language=language if notice is not None and language in notice.texts else "en",
                    notice_version=notice.version if notice else None,
                    material=bool(notice and notice.material),
                    double_opt_in=purpose.double_opt_in,
                    status=state.status if state else "none",  # type: ignore[arg-type]
                    active=bool(state and state.active),
                    since=state.since if state else None,
                    expires_at=state.expires_at if state else None,
                    needs_reconsent=bool(state and state.needs_reconsent),
                    consented_notice_version=state.notice_version if state else None,
                    receipt_event_id=state.event_id if state and state.status in _RECEIPTED else None,
                )
            )
        return MyConsents(language=language, consents=items)

    async def history(self, shopper: Shopper) -> ConsentHistoryOut:
        answer = await self.upstream.request("consent", "GET", f"/v1/subjects/{shopper.subject_id}/history", _History)
        return ConsentHistoryOut(
            events=[
                ConsentEvent(
                    event_id=event.id,
                    purpose=event.purpose,
                    action=event.action,
                    source=event.source,
                    notice_version=event.notice_version,
                    collected_at=event.collected_at,
                )
                for event in answer.events
            ]
        )

    async def change_consent(
        self, shopper: Shopper, change: ConsentChange, evidence: Evidence, *, gpc: bool
    ) -> ConsentChangeOut:
        """Record the shopper's own give or withdraw, with source ``preference_page``; it counts at once."""
        declared = self.policy.purposes.get(change.purpose)
        if declared is None:
            raise Unprocessable(f"purpose {change.purpose!r} is not declared in the policy", slug="unknown-purpose")
        if declared.legal_basis != "consent":
            raise Unprocessable(
                f"purpose {change.purpose!r} rests on {declared.legal_basis}, not on consent", slug="not-consent-based"
            )
        notice = self.policy.current_notice(change.purpose, self.clock())
        if change.action == "give":
            if change.notice_version is None:
                raise Unprocessable("name the notice_version the shopper was shown", slug="notice-version-required")
            if notice is not None and change.notice_version != notice.version:
                raise Conflict(
                    f"the notice shown (version {change.notice_version}) is not the current one (version "
                    f"{notice.version}); show the current notice and ask again",
                    slug="notice-outdated",
                )
        if change.language is not None:
            evidence = msgspec.structs.replace(evidence, language=change.language)
        event: dict[str, Any] = {
            "purpose": change.purpose,
            "action": change.action,
            "source": PAGE_SOURCE,
            "evidence": msgspec.to_builtins(evidence),
        }
        if change.action == "give":
            event["notice_version"] = change.notice_version
        elif notice is not None:
            event["notice_version"] = notice.version
        recorded = await self.upstream.request(
            "consent",
            "POST",
            f"/v1/subjects/{shopper.subject_id}/events",
            _Recorded,
            json=event,
            headers={"Sec-GPC": "1"} if gpc else None,
        )
        if recorded.confirmation is not None:
            # Double opt-in: the token goes to the channels that may write for this purpose, never to
            # the page (a forwarded link must not confirm an address); they e-mail the confirmation link.
            await enqueue_gateway_event(
                self._db(),
                "consent.confirmation_requested",
                shopper.subject_id,
                change.purpose,
                self.clock(),
                policy=self.policy,
                confirmation=(recorded.confirmation.token, recorded.confirmation.expires_at),
            )
        state = recorded.state
        return ConsentChangeOut(
            purpose=state.purpose,
            status=state.status,  # type: ignore[arg-type]
            active=state.active,
            event_id=state.event_id,
            since=state.since,
            expires_at=state.expires_at,
            receipt_event_id=state.event_id if recorded.receipt else None,
        )

    async def receipt(self, shopper: Shopper, event_id: str) -> str:
        """The compact JWS of one of the shopper's own events; another subject's event is not found."""
        path = f"/v1/subjects/{shopper.subject_id}/receipts/{event_id}"
        try:
            answer = await self.upstream.request("consent", "GET", path, _Receipt)
        except TillitError as exc:
            if exc.status_code == 404:
                raise NotFound("no receipt of yours has this event id", slug="receipt-not-found") from exc
            raise
        return answer.receipt

    # --- quizzes ---------------------------------------------------------------------------------

    async def quizzes(self) -> QuizList:
        return await self.upstream.request("preferences", "GET", "/v1/quizzes", QuizList)

    async def start_quiz(self, shopper: Shopper, start: StartQuiz) -> QuizSessionView:
        row = await self.upstream.request(
            "preferences",
            "POST",
            f"/v1/subjects/{shopper.subject_id}/quiz-sessions",
            _QuizSession,
            json=msgspec.to_builtins(start),
        )
        return _session_view(row)

    async def _own_session(self, shopper: Shopper, session_id: str) -> _QuizSession:
        """The session if it is the shopper's; another subject's, or none, is the same 404."""
        missing = NotFound("you have no quiz session with this id", slug="quiz-session-not-found")
        try:
            row = await self.upstream.request("preferences", "GET", f"/v1/quiz-sessions/{session_id}", _QuizSession)
        except NotFound as exc:
            raise missing from exc
        except TillitError as exc:
            if exc.status_code != 410:
                raise
            # Expired: the answer does not say whose it was, so only the shopper's own is called expired.
            if not any(row.id == session_id for row in await self._export_sessions(shopper.subject_id)):
                raise missing from exc
            raise
        if row.subject_id != shopper.subject_id:
            raise missing
        return row

    async def _act(self, shopper: Shopper, session_id: str, action: str, body: Any = None) -> QuizSessionView:
        await self._own_session(shopper, session_id)
        try:
            row = await self.upstream.request(
                "preferences", "POST", f"/v1/quiz-sessions/{session_id}/{action}", _QuizSession, json=body
            )
        except NotFound as exc:
            raise NotFound("you have no quiz session with this id", slug="quiz-session-not-found") from exc
        return _session_view(row)

    async def quiz_session(self, shopper: Shopper, session_id: str) -> QuizSessionView:
        return _session_view(await self._own_session(shopper, session_id))

    async def answer(self, shopper: Shopper, session_id: str, answer: AnswerIn) -> QuizSessionView:
        return await self._act(shopper, session_id, "answers", msgspec.to_builtins(answer))

    async def back(self, shopper: Shopper, session_id: str) -> QuizSessionView:
        return await self._act(shopper, session_id, "back")

    async def complete(self, shopper: Shopper, session_id: str) -> QuizSessionView:
        return await self._act(shopper, session_id, "complete")

    async def _preferences_export(self, subject_id: str) -> _PreferencesExport:
        return await self.upstream.request(
            "preferences", "GET", f"/v1/subjects/{subject_id}/export", _PreferencesExport
        )

    async def _export_sessions(self, subject_id: str) -> list[_ExportSession]:
        """The subject's quiz sessions (not the whole export: its profile history grows with every edit)."""
        answer = await self.upstream.request(
            "preferences", "GET", f"/v1/subjects/{subject_id}/quiz-sessions", _SubjectSessions
        )
        return answer.sessions

    async def quiz_sessions(self, shopper: Shopper) -> QuizSessionList:
        """Sessions that can be resumed now, read from the preferences service's per-subject export."""
        sessions = await self._export_sessions(shopper.subject_id)
        now = self.clock()
        open_sessions = [
            QuizSessionSummary(
                id=row.id,
                quiz_id=row.quiz_id,
                version=row.version,
                locale=row.locale,
                status=row.status,
                answered=len(row.answers),
                started_at=row.started_at,
                updated_at=row.updated_at,
                expires_at=row.expires_at,
            )
            for row in sessions
            if row.status == "in_progress" and as_utc(row.expires_at) > now
        ]
        open_sessions.sort(key=lambda session: session.updated_at, reverse=True)
        return QuizSessionList(sessions=open_sessions)

    # --- data-subject requests and export --------------------------------------------------------

    async def _requests(self, subject_id: str) -> list[_GdprRequest]:
        page = await self.upstream.request(
            "consent", "GET", "/v1/requests", _GdprPage, params={"subject_id": subject_id, "limit": 200}
        )
        return page.items

    async def requests(self, shopper: Shopper) -> MyRequests:
        return MyRequests(requests=[_request_out(row) for row in await self._requests(shopper.subject_id)])

    async def new_request(self, shopper: Shopper, request: NewRequest) -> MyRequest:
        """A GDPR request received through the preference page; one open request per type at a time."""
        for row in await self._requests(shopper.subject_id):
            if row.type == request.type and row.status in _OPEN_REQUEST:
                raise Conflict(
                    f"you already have an open {request.type} request (received {row.received_at:%Y-%m-%d})",
                    slug="request-already-open",
                )
        created = await self.upstream.request(
            "consent",
            "POST",
            "/v1/requests",
            _GdprRequest,
            json={"subject_id": shopper.subject_id, "type": request.type, "channel": "preference_center"},
        )
        return _request_out(created)

    async def recipients(self, subject_id: str) -> tuple[list[Recipient], bool]:
        """The release audit rows of the subject (profile releases and audience exports), oldest first."""
        session = self._db()
        profile_rows = (
            await session.exec(
                select(ReleaseRecord)
                .where(ReleaseRecord.subject_id == subject_id, ReleaseRecord.outcome == "released")
                .order_by(col(ReleaseRecord.released_at), col(ReleaseRecord.release_id))
                .limit(MAX_RECIPIENTS + 1)
            )
        ).all()
        audience = AudienceReleaseSubject.__table__  # type: ignore[attr-defined]
        export = AudienceRelease.__table__  # type: ignore[attr-defined]
        audience_rows = (
            await session.exec(  # type: ignore[call-overload]
                core_select(
                    audience.c.release_id,
                    audience.c.released,
                    audience.c.withheld,
                    audience.c.released_at,
                    export.c.channel,
                    export.c.purpose,
                )
                .join(export, export.c.release_id == audience.c.release_id)
                .where(audience.c.subject_id == subject_id)
                .order_by(audience.c.released_at, audience.c.release_id)
                .limit(MAX_RECIPIENTS + 1)
            )
        ).all()
        recipients = [
            Recipient(
                release_id=row.release_id,
                kind="profile",
                channel=row.channel,
                purpose=row.purpose,
                fields=list(row.released),
                withheld=[str(item.get("field")) for item in row.withheld],
                at=as_utc(row.released_at),
            )
            for row in profile_rows[:MAX_RECIPIENTS]
        ] + [
            Recipient(
                release_id=row.release_id,
                kind="audience",
                channel=row.channel,
                purpose=row.purpose,
                fields=list(_json_list(row.released)),
                withheld=[str(item.get("field")) for item in _json_list(row.withheld) if isinstance(item, dict)],
                at=as_utc(row.released_at),
            )
            for row in audience_rows[:MAX_RECIPIENTS]
        ]
        recipients.sort(key=lambda recipient: (recipient.at, recipient.release_id))
        complete = len(profile_rows) <= MAX_RECIPIENTS and len(audience_rows) <= MAX_RECIPIENTS
        return recipients, complete

    async def export(self, shopper: Shopper) -> MyExport:
        subject_id = shopper.subject_id
        profile, preferences, consents, history, requests = await _gather(
            self._profile(subject_id),
            self._preferences_export(subject_id),
            self.upstream.request("consent", "GET", f"/v1/subjects/{subject_id}/consents", dict[str, Any]),
            self.upstream.request("consent", "GET", f"/v1/subjects/{subject_id}/history", dict[str, Any]),
            self._requests(subject_id),
        )
        recipients, complete = await self.recipients(subject_id)
        return MyExport(
            subject_id=subject_id,
            exported_at=self.clock(),
            profile=self._fields(profile),
            profile_history=preferences.sections.profile_history,
            consents=list(consents.get("consents") or []),
            consent_history=list(history.get("events") or []),
            quiz_sessions=preferences.sections.quiz_sessions,
            requests=[_request_out(row) for row in requests],
            recipients=recipients,
            recipients_complete=complete,
        )


class _ExportSession(msgspec.Struct):
    id: str
    quiz_id: str
    version: int
    locale: str
    status: str
    answers: dict[str, Any]
    started_at: datetime
    updated_at: datetime
    expires_at: datetime


class _SubjectSessions(msgspec.Struct):
    sessions: list[_ExportSession]


def _json_list(value: Any) -> list[Any]:
    """A JSON column's list (PostgreSQL's COPY path may hand back text)."""
    if isinstance(value, str):
        value = msgspec.json.decode(value)
    return value if isinstance(value, list) else []


async def _gather(*calls: Any) -> tuple[Any, ...]:
    """Run the calls side by side; the first failure (a 503 when a service is down) is raised."""
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return tuple(outcomes)
