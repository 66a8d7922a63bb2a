"""The lifecycle of data-subject requests: deadlines, legal transitions, the one extension.

Deadlines follow Art. 12(3) GDPR: one calendar month after receipt, clamped to the month's last day
(received 31 January, due 28 or 29 February), at the same time of day; that is no later than the
Regulation allows, so the deadline shown is never too generous. One extension of one or two further
months is counted from receipt as well, so received 31 January and extended by two months is due
31 March, not 28 March.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import msgspec

from services.consent.requests.models import DataSubjectRequest, DataSubjectRequestStep
from services.consent.requests.repository import RequestRepository
from services.consent.requests.schemas import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TERMINAL_STATUSES,
    CreateRequest,
    ExtendRequest,
    ExtensionOut,
    HistoryEntry,
    RequestOut,
    RequestPage,
    TransitionRequest,
)
from services.consent.service import CLOCK_SKEW
from tillit.policy import ConsentDuration
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["GDPR_APPLIES", "LEGAL_TRANSITIONS", "RequestService", "decode_cursor", "due_date", "encode_cursor"]

LEGAL_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "received": frozenset({"verified", "rejected"}),
    "verified": frozenset({"in_progress", "rejected"}),
    "in_progress": frozenset({"completed", "rejected"}),
    "completed": frozenset(),
    "rejected": frozenset(),
}
_RESPONSE_MONTHS: Final = 1
GDPR_APPLIES: Final = datetime(2018, 5, 25, tzinfo=UTC)
"""No request can have been received under the Regulation before it applied (Art. 99(2))."""


def due_date(received_at: datetime, months: int = _RESPONSE_MONTHS) -> datetime:
    """``months`` calendar months after ``received_at``, clamped to the end of a shorter month."""
    return ConsentDuration(months=months).after(as_utc(received_at))


def encode_cursor(request: DataSubjectRequest) -> str:
    """The keyset position after ``request`` (receipt time and id), opaque to the caller."""
    position = msgspec.json.encode([as_utc(request.received_at), request.id])
    return base64.urlsafe_b64encode(position).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The keyset position of a cursor from :func:`encode_cursor`; 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        received_at, request_id = msgspec.json.decode(raw, type=tuple[Annotated[datetime, msgspec.Meta(tz=True)], str])
        return as_utc(received_at), request_id
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError) as exc:
        raise Unprocessable("cursor is not one this API handed out", slug="invalid-cursor") from exc


class RequestService:
    """Data-subject requests of the consent service.

    ``purposes`` are the purposes declared in the policy (an objection may name only those);
    ``clock`` gives the current UTC time, replaced in tests.
    """

    def __init__(
        self,
        repository: RequestRepository,
        purposes: Collection[str] = (),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.purposes = purposes
        self.clock = clock

    def _now(self) -> datetime:
        """The clock's time in UTC: SQLite compares stored moments as text, so every one must be UTC."""
        return as_utc(self.clock())

    async def create(self, command: CreateRequest) -> RequestOut:
        now = self._now()
        purposes = self._check_create(command)
        received_at = command.received_at or now
        if received_at > now + CLOCK_SKEW:
            raise Unprocessable(f"received_at {received_at.isoformat()} lies in the future", slug="received-in-future")
        if received_at < GDPR_APPLIES:
            raise Unprocessable(
                f"received_at {received_at.isoformat()} is before the GDPR applied ({GDPR_APPLIES.date()})",
                slug="received-before-gdpr",
            )
        received_at = as_utc(received_at)
        due_at = due_date(received_at)
        request = {
            "id": str(uuid.uuid4()),
            "subject_id": command.subject_id,
            "type": command.type,
            "status": "received",
            "channel": command.channel,
            "details": command.details,
            "purposes": purposes,
            "received_at": received_at,
            "due_at": due_at,
            "version": 1,
            "updated_at": now,
        }
        step = _step(
            request["id"],
            1,
            now,
            command.actor or command.channel,
            "received",
            from_status=None,
            to_status="received",
            due_at=due_at,
        )
        await self.repository.add(request, step)
        return await self.get(request["id"])

    def _check_create(self, command: CreateRequest) -> list[str]:
        """The purposes objected to, each once, in the order given; 422 if the request cannot stand."""
        if command.type == "rectification" and command.details is None:
            raise Unprocessable("a rectification request needs details: what is wrong", slug="details-required")
        if command.type != "objection":
            if command.purposes:
                raise Unprocessable(
                    f"only an objection names purposes; a {command.type} request does not",
                    slug="purposes-not-allowed",
                )
            return []
        if not command.purposes:
            raise Unprocessable("an objection names the purposes objected to", slug="purposes-required")
        for purpose in command.purposes:
            if purpose not in self.purposes:
                raise Unprocessable(f"purpose {purpose!r} is not declared in the policy", slug="unknown-purpose")
        return list(dict.fromkeys(command.purposes))

    async def get(self, request_id: str) -> RequestOut:
        request = await self._load(request_id)
        steps = await self.repository.steps_of([request.id])
        return _request_out(request, steps[request.id], self._now())

    async def page(
        self,
        *,
        status: str | None = None,
        request_type: str | None = None,
        overdue: bool | None = None,
        subject_id: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> RequestPage:
        """One page of requests, newest first; ``next_cursor`` is set while more may follow."""
        now = self._now()
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        rows = await self.repository.page(
            now=now,
            limit=limit + 1,
            status=status,
            request_type=request_type,
            overdue=overdue,
            subject_id=subject_id,
            after=decode_cursor(cursor) if cursor else None,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        steps = await self.repository.steps_of([row.id for row in rows])
        return RequestPage(
            items=[_request_out(row, steps[row.id], now) for row in rows],
            next_cursor=encode_cursor(rows[-1]) if more else None,
        )

    async def transition(self, request_id: str, command: TransitionRequest) -> RequestOut:
        if command.to == "rejected" and command.note is None:
            raise Unprocessable("a rejection needs the reason (note) given to the subject", slug="reason-required")
        request = await self._load(request_id)
        if command.to not in LEGAL_TRANSITIONS[request.status]:
            raise Conflict(
                f"request {request_id} is {request.status!r} and cannot become {command.to!r}",
                slug="illegal-transition",
            )
        now = self._now()
        values: dict[str, Any] = {"status": command.to, "updated_at": now}
        if command.to in TERMINAL_STATUSES:
            values |= {"closed_at": now, "resolution": command.note}
        await self._update(request, values)
        await self.repository.add_step(
            _step(
                request.id,
                request.version + 1,
                now,
                command.actor,
                "transition",
                from_status=request.status,
                to_status=command.to,
                note=command.note,
            )
        )
        return await self.get(request_id)

    async def extend(self, request_id: str, command: ExtendRequest) -> RequestOut:
        request = await self._load(request_id)
        now = self._now()
        if request.status in TERMINAL_STATUSES:
            raise Conflict(
                f"request {request_id} is {request.status!r}; it can no longer be extended", slug="request-closed"
            )
        if request.extension_months is not None:
            raise Conflict(
                f"request {request_id} was already extended by {request.extension_months} month(s); "
                "Art. 12(3) allows one extension",
                slug="already-extended",
            )
        if now > as_utc(request.due_at):
            raise Conflict(
                f"request {request_id} was due {as_utc(request.due_at).isoformat()}; an extension must be made "
                "and told to the subject within one month of receipt (Art. 12(3))",
                slug="extension-too-late",
            )
        due_at = due_date(request.received_at, _RESPONSE_MONTHS + command.months)
        await self._update(
            request,
            {
                "due_at": due_at,
                "extension_months": command.months,
                "extension_reason": command.reason,
                "extended_at": now,
                "extended_by": command.actor,
                "updated_at": now,
            },
        )
        step = _step(
            request.id,
            request.version + 1,
            now,
            command.actor,
            "extension",
            from_status=request.status,
            to_status=request.status,
            note=command.reason,
            due_at=due_at,
        )
        await self.repository.add_step(step)
        return await self.get(request_id)

    async def _load(self, request_id: str) -> DataSubjectRequest:
        request = await self.repository.get(request_id)
        if request is None:
            raise NotFound(f"no data-subject request {request_id}", slug="request-not-found")
        return request

    async def _update(self, request: DataSubjectRequest, values: dict[str, Any]) -> None:
        """Write ``values`` onto the request as it was read; 409 if another writer changed it first."""
        if await self.repository.update_if_unchanged(
            request.id, expected_version=request.version, expected_status=request.status, values=values
        ):
            return
        current = await self._load(request.id)
        raise Conflict(
            f"request {request.id} changed while this was being written: it is now {current.status!r} "
            f"(version {current.version}, was {request.status!r}); read it again and decide anew",
            slug="request-changed",
        )


def _step(
    request_id: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    *,
    from_status: str | None,
    to_status: str,
    note: str | None = None,
    due_at: datetime | None = None,
) -> dict[str, Any]:
    """A history row; ``seq`` is the request version the step produced. ``due_at``: a deadline it set."""
    return {
        "request_id": request_id,
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "from_status": from_status,
        "to_status": to_status,
        "note": note,
        "due_at": due_at,
    }


def _request_out(request: DataSubjectRequest, steps: list[DataSubjectRequestStep], now: datetime) -> RequestOut:
    due_at = as_utc(request.due_at)
    extension = None
    if request.extension_months is not None:
        extension = ExtensionOut(
            months=request.extension_months,
            reason=request.extension_reason or "",
            until=due_at,
            original_due_at=due_date(request.received_at),
            actor=request.extended_by or "",
            at=as_utc(request.extended_at or request.updated_at),
        )
    return RequestOut(
        id=request.id,
        subject_id=request.subject_id,
        type=request.type,  # type: ignore[arg-type]
        status=request.status,  # type: ignore[arg-type]
        channel=request.channel,
        details=request.details,
        purposes=list(request.purposes or []),
        received_at=as_utc(request.received_at),
        due_at=due_at,
        extension=extension,
        overdue=request.status not in TERMINAL_STATUSES and now > due_at,
        closed_at=as_utc(request.closed_at) if request.closed_at else None,
        resolution=request.resolution,
        version=request.version,
        history=[
            HistoryEntry(
                seq=step.seq,
                at=as_utc(step.at),
                actor=step.actor,
                action=step.action,  # type: ignore[arg-type]
                from_status=step.from_status,  # type: ignore[arg-type]
                to_status=step.to_status,  # type: ignore[arg-type]
                note=step.note,
                due_at=as_utc(step.due_at) if step.due_at else None,
            )
            for step in steps
        ],
    )
