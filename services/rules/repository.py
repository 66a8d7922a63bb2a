"""Every query of the rules service."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy import func, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.rules.models import Definition, Exposure, Generation

__all__ = ["DefinitionRepository", "ExposureRepository"]


class DefinitionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def generation(self) -> int:
        """The change counter: it moves whenever any definition is added, disabled or enabled."""
        row = await self.session.get(Generation, 1, populate_existing=True)
        return row.value if row is not None else 0

    async def _bump(self) -> None:
        await self.session.exec(update(Generation).where(col(Generation.id) == 1).values(value=Generation.value + 1))  # type: ignore[call-overload]

    async def latest_version(self, kind: str, key: str) -> Definition | None:
        statement = (
            select(Definition)
            .where(Definition.kind == kind, Definition.key == key)
            .order_by(col(Definition.version).desc())
            .limit(1)
        )
        return (await self.session.exec(statement)).first()

    async def version(self, kind: str, key: str, version: int) -> Definition | None:
        statement = select(Definition).where(
            Definition.kind == kind, Definition.key == key, Definition.version == version
        )
        return (await self.session.exec(statement)).first()

    async def add(self, definition: Definition) -> None:
        self.session.add(definition)
        await self.session.flush()
        await self._bump()

    async def latest(
        self, *, kind: str | None = None, purpose: str | None = None, status: str | None = None
    ) -> Sequence[Definition]:
        """The latest version of every key (of ``kind`` / ``purpose`` / ``status``), by kind and key."""
        newest = (
            select(Definition.kind, Definition.key, func.max(Definition.version).label("version"))
            .group_by(col(Definition.kind), col(Definition.key))
            .subquery()
        )
        statement = select(Definition).join(
            newest,
            (col(Definition.kind) == newest.c.kind)
            & (col(Definition.key) == newest.c.key)
            & (col(Definition.version) == newest.c.version),
        )
        if kind is not None:
            statement = statement.where(Definition.kind == kind)
        if purpose is not None:
            statement = statement.where(Definition.purpose == purpose)
        if status is not None:
            statement = statement.where(Definition.status == status)
        return (await self.session.exec(statement.order_by(col(Definition.kind), col(Definition.key)))).all()

    async def set_status(
        self, row: Definition, status: str, problem: str | None, disabled_by: str | None, now: datetime
    ) -> None:
        row.status, row.disabled_by, row.changed_at = status, disabled_by, now
        row.problem = problem[:2000] if problem is not None else None
        self.session.add(row)
        await self.session.flush()
        await self._bump()


class ExposureRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_counts(self, counts: Iterable[tuple[str, str, date, int]]) -> None:
        """Add to the per-day counters (one upsert per counter)."""
        rows = [{"experiment": e, "arm": a, "day": d, "count": n} for e, a, d, n in counts]
        if not rows:
            return
        dialect = self.session.bind.dialect.name if self.session.bind is not None else "sqlite"
        insert = postgres_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(Exposure).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["experiment", "arm", "day"],
            set_={"count": Exposure.__table__.c["count"] + statement.excluded["count"]},  # type: ignore[attr-defined]
        )
        await self.session.exec(statement)  # type: ignore[call-overload]

    async def for_experiment(self, experiment: str) -> Sequence[Exposure]:
        statement = (
            select(Exposure).where(Exposure.experiment == experiment).order_by(col(Exposure.day), col(Exposure.arm))
        )
        return (await self.session.exec(statement)).all()
