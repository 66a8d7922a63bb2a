"""The release audit, queryable: who received which fields of whom, when, under which consent.

Compliance reads it per subject (the recipients an Art. 15 export lists) or per channel, in
(time, release id) order with keyset pagination: a cursor names the last row seen, so pages stay
stable while new releases are appended and no page costs more than its own rows.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import msgspec
from litestar import Controller, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.api import provide_caller, require_access_token
from gateway.models import ReleaseRecord
from gateway.oauth import Caller
from gateway.repository import ReleaseAuditRepository
from gateway.schemas import AuditEntry, AuditPage, AuditWithheld
from tillit.db import provide_read_session
from tillit.patterns import exact
from tillit.problems import Unprocessable, problem_responses
from tillit.types import SUBJECT_ID_PATTERN, as_utc

__all__ = ["AUDIT_SCOPE", "DEFAULT_PAGE", "MAX_PAGE", "AuditController", "AuditService"]

AUDIT_SCOPE: Final = "audit:read"
DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 500
_CURSOR_PATTERN: Final = exact(r"^[A-Za-z0-9_-]{1,200}$")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def encode_cursor(record: ReleaseRecord) -> str:
    """The keyset of ``record``: its time in whole microseconds and its id, base64url without padding."""
    at = as_utc(record.released_at)
    micros = (at - _EPOCH) // _MICROSECOND
    raw = msgspec.json.encode([micros, record.release_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, release_id = msgspec.json.decode(raw, type=tuple[int, Annotated[str, msgspec.Meta(max_length=36)]])
        return _EPOCH + micros * _MICROSECOND, release_id
    except (binascii.Error, ValueError, OverflowError, msgspec.DecodeError) as exc:
        raise Unprocessable(
            "after is not a cursor this endpoint handed out (use next_cursor from the previous page)",
            slug="invalid-cursor",
        ) from exc


def _entry(record: ReleaseRecord) -> AuditEntry:
    return AuditEntry(
        release_id=record.release_id,
        outcome="refused" if record.outcome == "refused" else "released",
        channel=record.channel,
        client_id=record.client_id,
        purpose=record.purpose,
        subject_id=record.subject_id,
        released=list(record.released),
        withheld=[AuditWithheld(field=str(w.get("field")), reason=str(w.get("reason"))) for w in record.withheld],
        consent_event_ids=[record.consent_event_id] if record.consent_event_id else [],
        at=as_utc(record.released_at),
    )


class AuditService:
    def __init__(self, repository: ReleaseAuditRepository) -> None:
        self.repository = repository

    async def releases(
        self,
        *,
        subject_id: str | None = None,
        channel: str | None = None,
        after: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> AuditPage:
        """One page of the audit for a subject and/or a channel (one of them is required)."""
        if subject_id is None and channel is None:
            raise Unprocessable("name a subject_id or a channel (or both)", slug="audit-filter-required")
        keyset = decode_cursor(after) if after is not None else None
        limit = max(1, min(limit, MAX_PAGE))
        rows = await self.repository.page(subject_id=subject_id, channel=channel, after=keyset, limit=limit + 1)
        items = [_entry(row) for row in rows[:limit]]
        next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return AuditPage(items=items, next_cursor=next_cursor)


def provide_audit_service(session: AsyncSession) -> AuditService:
    return AuditService(ReleaseAuditRepository(session))


class AuditController(Controller):
    path = "/v1/audit"
    tags = ["audit"]
    guards = [require_access_token]
    dependencies = {
        "session": Provide(provide_read_session),
        "caller": Provide(provide_caller, sync_to_thread=False),
        "audit": Provide(provide_audit_service, sync_to_thread=False),
    }

    @get(
        "/releases",
        summary="The release audit for a subject or a channel, oldest first, keyset-paginated",
        description=(
            "Every release and every refused attempt (a channel asking for a purpose it is not "
            "registered for): release id, outcome, channel, client, purpose, subject, fields released, "
            "fields withheld with the reason, the consent event(s) relied on, and the time. Name a "
            "subject_id, a channel or both; follow next_cursor with after= until it is null."
        ),
        responses=problem_responses(400, 401, 403, 422, 429),
    )
    async def releases(
        self,
        caller: Caller,
        audit: AuditService,
        subject_id: Annotated[
            str | None,
            Parameter(pattern=SUBJECT_ID_PATTERN, max_length=64, description="Only releases of this subject"),
        ] = None,
        channel: Annotated[
            str | None,
            # Not FIELD_NAME_PATTERN's spelling: the published schema adds the field names as enum to that.
            Parameter(pattern=exact(r"^[a-z][a-z0-9_]*$"), max_length=64, description="Only releases to this channel"),
        ] = None,
        after: Annotated[
            str | None,
            Parameter(
                pattern=_CURSOR_PATTERN,
                max_length=200,
                description="next_cursor of the previous page",
            ),
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Rows per page")] = DEFAULT_PAGE,
    ) -> AuditPage:
        caller.require(AUDIT_SCOPE)
        return await audit.releases(subject_id=subject_id, channel=channel, after=after, limit=limit)
