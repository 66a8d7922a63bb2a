"""Every query of quiz definitions, sessions and counters."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final

import msgspec
from sqlalchemy import BigInteger, cast, delete, func, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.quizzes.models import QuizCounter, QuizDefinitionRow, QuizSession
from tillit.db import autocommit_connection, driver_connection, release_autocommit

__all__ = ["COUNTER_SHARDS", "CounterKey", "QuizRepository", "SessionRow", "counter_shard"]

CounterKey = tuple[str, int, str, str, str]
"""(quiz_id, version, metric, question_id, bucket)"""
COUNTER_SHARDS: Final = 32
"""Rows per counter (see migration 0004): a session's writes all go to the shard its id picks."""


def counter_shard(session_id: str) -> int:
    """The counter shard of a quiz session: concurrent sessions rarely share one."""
    return uuid.UUID(session_id).int % COUNTER_SHARDS


class SessionRow(msgspec.Struct):
    """A quiz session as read on PostgreSQL's direct path (the ORM model's columns, no identity map)."""

    id: str
    subject_id: str
    quiz_id: str
    quiz_version: int
    locale: str
    status: str
    current_question: str | None
    last_question: str | None
    answers: Any
    traits: Any
    revision: int
    started_at: datetime
    updated_at: datetime
    expires_at: datetime
    completed_at: datetime | None


_PG_SESSION: Final = f"SELECT {', '.join(SessionRow.__struct_fields__)} FROM quiz_session WHERE id = $1"  # noqa: S608
# An answer's writes in one autocommitted statement: the session moves on only if its revision is
# still the one read ($6), and the counters move with it (in key order, like the ORM path).
_PG_ANSWER: Final = """
WITH moved AS (
    UPDATE quiz_session
    SET answers = $2::json, current_question = $3, last_question = $4, updated_at = $5,
        expires_at = $7, revision = $6 + 1
    WHERE id = $1 AND revision = $6
    RETURNING 1
), counted AS (
    INSERT INTO quiz_counter (quiz_id, version, metric, question_id, bucket, shard, count)
    SELECT $8, $9, c.metric, c.question_id, c.bucket, $10, c.n
    FROM unnest($11::text[], $12::text[], $13::text[], $14::bigint[]) AS c (metric, question_id, bucket, n), moved
    ORDER BY c.metric, c.question_id, c.bucket
    ON CONFLICT (quiz_id, version, metric, question_id, bucket, shard)
    DO UPDATE SET count = quiz_counter.count + EXCLUDED.count
)
SELECT count(*) FROM moved
"""

_session = QuizSession.__table__  # type: ignore[attr-defined]
_counter = QuizCounter.__table__  # type: ignore[attr-defined]


@cache
def _count_statement(dialect_name: str) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(_counter)
    return insert.on_conflict_do_update(
        index_elements=["quiz_id", "version", "metric", "question_id", "bucket", "shard"],
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

    async def quiz_session(self, session_id: str) -> QuizSession | SessionRow | None:
        """The session as committed now. On PostgreSQL one fixed statement on asyncpg directly: no
        ORM objects, and no BEGIN yet, so an answer can still commit as one statement on the same
        connection (:meth:`answer_if_unchanged`). In a write session that is a bare pooled connection
        (see :func:`tillit.db.autocommit_connection`): :meth:`release_autocommit_driver` before
        writing through the session."""
        driver = await autocommit_connection(self.session) or await driver_connection(self.session)
        if driver is not None:
            row = await driver.fetchrow(_PG_SESSION, session_id)
            return None if row is None else SessionRow(*row)
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

    async def autocommit_driver(self) -> Any | None:
        """See :func:`tillit.db.autocommit_connection`: set while nothing was written in this request."""
        return await autocommit_connection(self.session)

    async def release_autocommit_driver(self) -> None:
        """Give the bare connection back before this session uses its own."""
        await release_autocommit(self.session)

    async def answer_if_unchanged(
        self,
        driver: Any,
        session_id: str,
        *,
        expected_revision: int,
        values: Mapping[str, Any],
        quiz: tuple[str, int],
        deltas: Mapping[CounterKey, int],
        shard: int,
    ) -> bool:
        """An answer's session update and counter deltas as one autocommitted statement (PostgreSQL).

        False, writing nothing, if another request changed the session since it was read: the
        revision check is the same as :meth:`update_if_unchanged`'s.
        """
        counted = sorted((key[2], key[3], key[4], n) for key, n in deltas.items() if n)
        moved = await driver.fetchval(
            _PG_ANSWER,
            session_id,
            msgspec.json.encode(values["answers"]).decode(),
            values["current_question"],
            values["last_question"],
            values["updated_at"],
            expected_revision,
            values["expires_at"],
            quiz[0],
            quiz[1],
            shard,
            [row[0] for row in counted],
            [row[1] for row in counted],
            [row[2] for row in counted],
            [row[3] for row in counted],
        )
        return bool(moved)

    async def count(self, deltas: Mapping[CounterKey, int], shard: int = 0) -> None:
        """Add each delta to its counter's ``shard`` (in key order, so concurrent writers lock rows alike)."""
        rows = [
            {
                "quiz_id": key[0],
                "version": key[1],
                "metric": key[2],
                "question_id": key[3],
                "bucket": key[4],
                "shard": shard,
                "count": n,
            }
            for key, n in sorted(deltas.items())
            if n
        ]
        if rows:
            statement = _count_statement(self.session.bind.dialect.name).values(rows)
            await self.session.exec(statement)  # type: ignore[call-overload]

    async def counters(self, quiz_id: str) -> Sequence[Any]:
        """The quiz's counters, each the sum of its shards (rows with ``version``, ``metric``,
        ``question_id``, ``bucket`` and ``count``)."""
        key = (_counter.c.version, _counter.c.metric, _counter.c.question_id, _counter.c.bucket)
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(*key, cast(func.sum(_counter.c.count), BigInteger).label("count"))
            .where(_counter.c.quiz_id == quiz_id)
            .group_by(*key)
        )
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
