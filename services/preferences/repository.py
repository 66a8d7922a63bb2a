"""Every query of the preferences service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.models import ProfileValue

__all__ = ["ProfileRepository"]


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def values_for(self, subject_id: str) -> Sequence[ProfileValue]:
        result = await self.session.exec(
            select(ProfileValue).where(ProfileValue.subject_id == subject_id).order_by(ProfileValue.field)
        )
        return result.all()

    async def put(self, value: ProfileValue) -> None:
        await self.session.merge(value)

    async def remove(self, subject_id: str, fields: Sequence[str]) -> None:
        if fields:
            await self.session.exec(  # type: ignore[call-overload]
                delete(ProfileValue).where(
                    col(ProfileValue.subject_id) == subject_id, col(ProfileValue.field).in_(fields)
                )
            )
        await self.session.flush()
