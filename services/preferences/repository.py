"""Every query of the preferences service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any, Final, NamedTuple

import msgspec
from sqlalchemy import delete, distinct, func
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.models import SUBJECT_TABLES, ProfileChange, ProfileSubject, ProfileValue
from services.preferences.quizzes.models import QuizSession
from tillit.db import Database, bare_fetch, driver_connection

__all__ = ["ProfileRepository", "StoredValue", "profiles_of_subjects", "stored_values_of"]

_subject = ProfileSubject.__table__  # type: ignore[attr-defined]
_PG_VALUES: Final = "SELECT field, value, source, updated_at FROM profile_value WHERE subject_id = $1 ORDER BY field"
_PG_VALUES_OF: Final = """
SELECT subject_id, field, value, source, updated_at FROM profile_value
WHERE subject_id = ANY($1::text[]) ORDER BY subject_id, field
"""


class StoredValue(NamedTuple):
    """One stored profile value as read for an answer (no ORM identity, not for writing back)."""

    field: str
    value: Any
    source: str
    updated_at: datetime


async def stored_values_of(driver: Any, subject_ids: Sequence[str]) -> dict[str, list[StoredValue]]:
    """The values of many subjects ordered by field, on an asyncpg connection (PostgreSQL only).

    A subject with no value is left out. For :class:`services.preferences.service.BatchedProfileReads`.
    """
    values: dict[str, list[StoredValue]] = {}
    for subject_id, *row in await driver.fetch(_PG_VALUES_OF, subject_ids):
        values.setdefault(subject_id, []).append(StoredValue(*row))
    return values


_value = ProfileValue.__table__  # type: ignore[attr-defined]

# Audiences read profiles by the thousand: PostgreSQL folds each subject's values into one JSON
# object, so one row (and one decode) per subject instead of one per field.
_PG_PROFILES: Final = """
SELECT subject_id, json_object_agg(field, value ORDER BY field)::text
FROM profile_value WHERE subject_id = ANY($1::text[])
GROUP BY subject_id ORDER BY subject_id
"""
_PG_SUBJECTS_AFTER: Final = """
SELECT subject_id FROM profile_subject WHERE subject_id > $1 ORDER BY subject_id LIMIT $2
"""
_decode_fields = msgspec.json.Decoder(dict[str, Any]).decode


async def profiles_of_subjects(database: Database, subject_ids: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """:meth:`ProfileRepository.profiles_of` on a bare connection without a session (PostgreSQL only):
    the gateway's batched profile reads take this path."""
    return [(row[0], _decode_fields(row[1])) for row in await bare_fetch(database, _PG_PROFILES, subject_ids)]


@cache
def _lock_statement(dialect_name: str) -> Any:
    dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
    insert = dialect.insert(_subject)
    return insert.on_conflict_do_update(
        index_elements=["subject_id"],
        set_={"version": _subject.c.version + 1, "updated_at": insert.excluded.updated_at},
    )


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _asyncpg(self) -> Any | None:
        """The asyncpg connection under this session on PostgreSQL (the bulk reads use it); None on SQLite."""
        return await driver_connection(self.session)

    async def profiles_of(self, subject_ids: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """(subject, fields) of each of these subjects that holds a value, in subject order."""
        driver = await self._asyncpg()
        if driver is not None:
            rows = await driver.fetch(_PG_PROFILES, list(subject_ids))
            return [(row[0], _decode_fields(row[1])) for row in rows]
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_value.c.subject_id, _value.c.field, _value.c.value)
            .where(_value.c.subject_id.in_(subject_ids))
            .order_by(_value.c.subject_id, _value.c.field)
        )
        profiles: dict[str, dict[str, Any]] = {}
        for subject_id, field, value in result:
            profiles.setdefault(subject_id, {})[field] = value
        return list(profiles.items())

    async def subjects_after(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` subjects with a profile row after ``after``, in subject order (keyset pages)."""
        driver = await self._asyncpg()
        if driver is not None:
            return [row[0] for row in await driver.fetch(_PG_SUBJECTS_AFTER, after, limit)]
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_subject.c.subject_id)
            .where(_subject.c.subject_id > after)
            .order_by(_subject.c.subject_id)
            .limit(limit)
        )
        return [row[0] for row in result]

    async def lock_subject(self, subject_id: str, now: datetime) -> None:
        """Create or bump the subject's row, locking it until the transaction ends.

        A write first: on SQLite the transaction takes the write lock at once (instead of failing to
        upgrade a read lock), on PostgreSQL the row lock serializes this subject's writers only, and
        each then reads the values the one before it committed.
        """
        await self.session.exec(  # type: ignore[call-overload]
            _lock_statement(self.session.bind.dialect.name),
            params={"subject_id": subject_id, "version": 0, "updated_at": now},
        )

    async def count_subjects(self) -> int:
        """Subjects holding at least one profile value."""
        result = await self.session.exec(select(func.count(distinct(ProfileValue.subject_id))))
        return int(result.one())

    async def values_for(self, subject_id: str) -> Sequence[ProfileValue]:
        result = await self.session.exec(
            select(ProfileValue).where(ProfileValue.subject_id == subject_id).order_by(col(ProfileValue.field))
        )
        return result.all()

    async def read_values(self, subject_id: str) -> Sequence[StoredValue | ProfileValue]:
        """The subject's values ordered by field, for reading only.

        On PostgreSQL the fixed statement runs on the session's asyncpg connection directly: through
        the ORM, building the query and the objects cost several times what PostgreSQL did (py-spy
        under ``bench.gateway``, which reads a profile per release). JSON arrives decoded: SQLAlchemy
        installs its codec on every connection it opens.
        """
        driver = await driver_connection(self.session)
        if driver is None:
            return await self.values_for(subject_id)
        return [StoredValue(*row) for row in await driver.fetch(_PG_VALUES, subject_id)]

    def add(self, value: ProfileValue | ProfileChange) -> None:
        self.session.add(value)

    async def remove(self, value: ProfileValue) -> None:
        await self.session.delete(value)

    async def flush(self) -> None:
        await self.session.flush()

    async def changes_for(
        self, subject_id: str, limit: int | None = None, before: int | None = None
    ) -> list[ProfileChange]:
        """The subject's changes, newest first; ``limit`` bounds them, ``before`` pages on by id."""
        query = select(ProfileChange).where(ProfileChange.subject_id == subject_id)
        if before is not None:
            query = query.where(col(ProfileChange.id) < before)
        query = query.order_by(col(ProfileChange.id).desc())
        if limit is not None:
            query = query.limit(limit)
        return list((await self.session.exec(query)).all())

    async def quiz_sessions_for(self, subject_id: str) -> Sequence[QuizSession]:
        result = await self.session.exec(
            select(QuizSession)
            .where(QuizSession.subject_id == subject_id)
            .order_by(col(QuizSession.started_at), col(QuizSession.id))
        )
        return result.all()

    async def erase(self, subject_id: str) -> dict[str, int]:
        """Delete every row of the subject in every table; rows deleted per table."""
        counts: dict[str, int] = {}
        for table in SUBJECT_TABLES:
            result = await self.session.exec(  # type: ignore[call-overload]
                delete(table).where(table.subject_id == subject_id)  # type: ignore[attr-defined]
            )
            counts[_table_name(table)] = result.rowcount or 0
        return counts


def _table_name(table: type[SQLModel]) -> str:
    return str(table.__tablename__)
