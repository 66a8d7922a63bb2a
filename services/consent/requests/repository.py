"""Every query of the data-subject requests.

Datetimes are bound in UTC: SQLite stores them as text without an offset, so comparisons
(overdue, the page cursor) are only right when every stored and bound moment is UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.requests.models import DataSubjectRequest, DataSubjectRequestStep
from services.consent.requests.schemas import TERMINAL_STATUSES

__all__ = ["RequestRepository"]

_request = DataSubjectRequest.__table__  # type: ignore[attr-defined]
_step = DataSubjectRequestStep.__table__  # type: ignore[attr-defined]


class RequestRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, request: dict[str, Any], step: dict[str, Any]) -> None:
        """Insert a new request with the first step of its history."""
        await self.session.exec(  # type: ignore[call-overload]
            insert(_request).values(**request)
        )
        await self.add_step(step)

    async def add_step(self, step: dict[str, Any]) -> None:
        await self.session.exec(  # type: ignore[call-overload]
            insert(_step).values(**step)
        )

    async def get(self, request_id: str) -> DataSubjectRequest | None:
        """The request as stored now (not as the session saw it earlier: updates bypass the ORM)."""
        result = await self.session.exec(
            select(DataSubjectRequest)
            .where(DataSubjectRequest.id == request_id)
            .execution_options(populate_existing=True)
        )
        return result.first()

    async def update_if_unchanged(
        self, request_id: str, *, expected_version: int, expected_status: str, values: dict[str, Any]
    ) -> bool:
        """Apply ``values`` only if the row is still the one that was read; False if another writer won.

        On PostgreSQL a concurrent writer waits for the row lock, then finds the version moved and
        updates nothing; on SQLite this is the transaction's first write, so it waits for the
        database write lock and then sees the committed row.
        """
        result = await self.session.exec(  # type: ignore[call-overload]
            update(_request)
            .where(
                _request.c.id == request_id,
                _request.c.version == expected_version,
                _request.c.status == expected_status,
            )
            .values(**values, version=expected_version + 1)
        )
        return bool(result.rowcount == 1)

    async def steps_of(self, request_ids: Collection[str]) -> dict[str, list[DataSubjectRequestStep]]:
        """The history of each request, oldest step first (one query for a whole page)."""
        steps: dict[str, list[DataSubjectRequestStep]] = {request_id: [] for request_id in request_ids}
        if not steps:
            return steps
        result = await self.session.exec(
            select(DataSubjectRequestStep)
            .where(col(DataSubjectRequestStep.request_id).in_(list(steps)))
            .order_by(col(DataSubjectRequestStep.request_id), col(DataSubjectRequestStep.seq))
        )
        for step in result.all():
            steps[step.request_id].append(step)
        return steps

    async def page(
        self,
        *,
        now: datetime,
        limit: int,
        status: str | None = None,
        request_type: str | None = None,
        overdue: bool | None = None,
        subject_id: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> Sequence[DataSubjectRequest]:
        """Requests newest first (by receipt, then id), starting after the keyset position ``after``."""
        received_at = col(DataSubjectRequest.received_at)
        request_id = col(DataSubjectRequest.id)
        open_ = col(DataSubjectRequest.status).not_in(sorted(TERMINAL_STATUSES))
        past_due = col(DataSubjectRequest.due_at) < now
        statement = select(DataSubjectRequest)
        if status is not None:
            statement = statement.where(DataSubjectRequest.status == status)
        if request_type is not None:
            statement = statement.where(DataSubjectRequest.type == request_type)
        if subject_id is not None:
            statement = statement.where(DataSubjectRequest.subject_id == subject_id)
        if overdue is True:
            statement = statement.where(open_, past_due)
        elif overdue is False:
            statement = statement.where(or_(~open_, ~past_due))
        if after is not None:
            last_received, last_id = after
            statement = statement.where(
                or_(received_at < last_received, and_(received_at == last_received, request_id < last_id))
            )
        statement = statement.order_by(received_at.desc(), request_id.desc()).limit(limit)
        result = await self.session.exec(statement.execution_options(populate_existing=True))
        return result.all()
