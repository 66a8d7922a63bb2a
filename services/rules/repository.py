"""Every query of the rules service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.rules.models import Segment

__all__ = ["SegmentRepository"]


class SegmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key: str) -> Segment | None:
        return await self.session.get(Segment, key)

    async def add(self, segment: Segment) -> None:
        self.session.add(segment)
        await self.session.flush()

    async def for_purpose(self, purpose: str | None = None) -> Sequence[Segment]:
        statement = select(Segment).order_by(Segment.key)
        if purpose is not None:
            statement = statement.where(Segment.purpose == purpose)
        return (await self.session.exec(statement)).all()
