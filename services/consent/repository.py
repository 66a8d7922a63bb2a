"""Every query of the consent service."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.models import ConsentEvent, ConsentState

__all__ = ["ConsentRepository"]


class ConsentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append_event(self, event: ConsentEvent) -> None:
        self.session.add(event)
        await self.session.flush()

    async def put_state(self, state: ConsentState) -> None:
        """Insert or replace the derived state in one statement, so concurrent writers never collide."""
        values = state.model_dump()
        dialect = postgresql if self.session.bind.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(ConsentState).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["subject_id", "purpose"],
            set_={key: statement.excluded[key] for key in values if key not in ("subject_id", "purpose")},
        )
        await self.session.exec(statement)  # type: ignore[call-overload]

    async def states_for(self, subject_id: str) -> Sequence[ConsentState]:
        result = await self.session.exec(
            select(ConsentState).where(ConsentState.subject_id == subject_id).order_by(ConsentState.purpose)
        )
        return result.all()
