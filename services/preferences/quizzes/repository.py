"""Every query of quiz definitions, sessions and counters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.quizzes.models import QuizCounter, QuizDefinitionRow, QuizSession

__all__ = ["CounterKey", "QuizRepository"]

CounterKey = tuple[str, int, str, str, str]
"""(quiz_id, version, metric, question_id, bucket)"""

_session = QuizSession.__table__  # type: ignore[attr-defined]
_counter = QuizCounter.__table__  # type: ignore[attr-defined]


@cache
def _count_statement(dialect_name: str) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(_counter)
    return insert.on_conflict_do_update(
        index_elements=["quiz_id", "version", "metric", "question_id", "bucket"],
        set_={"count": _counter.c.count + insert.excluded.count},
    )


class QuizRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def definition_keys(self, quiz_id: str | None = None) -> list[tuple[str, int]]:
        query = select(QuizDefinitionRow.quiz_id, QuizDefinitionRow.version)
        if quiz_id is not None:
            query = query.where(QuizDefinitionRow.quiz_id == quiz_id)
        return [(row[0], row[1]) for row in (await self.session.exec(query)).all()]

    async def definition(self, quiz_id: str, version: int) -> QuizDefinitionRow | None:
        return await self.session.get(QuizDefinitionRow, (quiz_id, version))

    def add(self, row: QuizDefinitionRow | QuizSession) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def quiz_session(self, session_id: str) -> QuizSession | None:
        result = await self.session.exec(
            select(QuizSession).where(QuizSession.id == session_id).execution_options(populate_existing=True)
        )
        return result.first()

    async def update_if_unchanged(self, session_id: str, *, expected_revision: int, values: dict[str, Any]) -> bool:
        """Apply ``values`` only if the session is still the one that was read; False if another writer won.

        On PostgreSQL a concurrent writer waits for the row lock, then finds the revision moved; on
        SQLite this is the transaction's first write, so it waits for the write lock and then sees
        the committed row.
        """
        result = await self.session.exec(  # type: ignore[call-overload]
            update(_session)
            .where(_session.c.id == session_id, _session.c.revision == expected_revision)
            .values(**values, revision=expected_revision + 1)
        )
        return bool(result.rowcount == 1)

    async def count(self, deltas: Mapping[CounterKey, int]) -> None:
        """Add each delta to its counter (in key order, so concurrent writers lock rows alike)."""
        rows = [
            {
                "quiz_id": key[0],
                "version": key[1],
                "metric": key[2],
                "question_id": key[3],
                "bucket": key[4],
                "count": n,
            }
            for key, n in sorted(deltas.items())
            if n
        ]
        if rows:
            statement = _count_statement(self.session.bind.dialect.name).values(rows)
            await self.session.exec(statement)  # type: ignore[call-overload]

    async def counters(self, quiz_id: str) -> Sequence[QuizCounter]:
        result = await self.session.exec(select(QuizCounter).where(QuizCounter.quiz_id == quiz_id))
        return result.all()

    async def purge_sessions_expired_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` unfinished sessions that expired before ``cutoff``; how many went."""
        doomed = (
            select(QuizSession.id)
            .where(QuizSession.status == "in_progress", QuizSession.expires_at < cutoff)
            .limit(limit)
            .scalar_subquery()
        )
        result = await self.session.exec(delete(QuizSession).where(QuizSession.id.in_(doomed)))  # type: ignore[call-overload,attr-defined]
        return int(result.rowcount or 0)
