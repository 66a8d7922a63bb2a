"""Reading the change feed."""

from __future__ import annotations

from services.consent.changes.repository import ChangeRepository
from services.consent.changes.schemas import ChangeOut, ChangePage
from tillit.types import as_utc

__all__ = ["ChangeFeed"]


class ChangeFeed:
    def __init__(self, repository: ChangeRepository) -> None:
        self.repository = repository

    async def read(self, after: int, limit: int) -> ChangePage:
        """Changes after position ``after``, oldest first; positions are given to new ones first."""
        await self.repository.number_committed()
        rows = await self.repository.after(after, limit)
        changes = [
            ChangeOut(
                seq=int(row.seq or 0),
                subject_id=row.subject_id,
                purpose=row.purpose,
                action=row.action,  # type: ignore[arg-type]
                occurred_at=as_utc(row.occurred_at),
                event_id=row.event_id,
            )
            for row in rows
        ]
        return ChangePage(changes=changes, last_seq=changes[-1].seq if changes else after)
