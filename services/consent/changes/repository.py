"""Every query of the change feed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import insert, text
from sqlalchemy import select as core_select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.changes.models import ConsentChange

__all__ = ["ChangeRepository"]

_change = ConsentChange.__table__  # type: ignore[attr-defined]

_FEED_LOCK: Final = 0x7711_C4A6
"""PostgreSQL advisory lock key: one numbering at a time (any schema; numbering is quick)."""

_NUMBER: Final = text(
    """
    UPDATE consent_change SET seq = numbered.position
    FROM (
        SELECT id, (SELECT COALESCE(MAX(seq), 0) FROM consent_change) + ROW_NUMBER() OVER (ORDER BY id) AS position
        FROM consent_change WHERE seq IS NULL ORDER BY id LIMIT :batch
    ) AS numbered
    WHERE consent_change.id = numbered.id
    """
)


class ChangeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def number_committed(self, batch: int = 5_000) -> None:
        """Give the next positions to changes committed since the last numbering.

        Under a transaction-long lock on PostgreSQL (READ COMMITTED: the UPDATE sees everything the
        previous numbering committed); SQLite's single writer is the lock there, taken by the UPDATE
        being the transaction's first statement.
        """
        if self.session.bind.dialect.name == "postgresql":
            await self.session.exec(text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=_FEED_LOCK))  # type: ignore[call-overload]
        await self.session.exec(_NUMBER.bindparams(batch=batch))  # type: ignore[call-overload]

    async def after(self, seq: int, limit: int) -> Sequence[ConsentChange]:
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_change).where(_change.c.seq > seq).order_by(_change.c.seq).limit(limit)
        )
        return [ConsentChange(**row._mapping) for row in result]

    async def last_seq(self) -> int:
        result = await self.session.exec(core_select(_change.c.seq).order_by(_change.c.seq.desc()).limit(1))  # type: ignore[call-overload]
        return int(result.scalar() or 0)

    async def record_erasure(self, subject_id: str, occurred_at: datetime) -> None:
        """The erasure path's change: the subject is gone from every service, for every purpose."""
        await self.session.exec(  # type: ignore[call-overload]
            insert(_change).values(subject_id=subject_id, purpose=None, action="erased", occurred_at=occurred_at)
        )
