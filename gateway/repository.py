"""Every query of the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec
from sqlalchemy import and_, insert, or_
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import AudienceRelease, AudienceReleaseSubject, ChannelClient, ReleaseRecord

if TYPE_CHECKING:
    from gateway.audit_writer import AuditWriter, ReleaseRow

__all__ = ["AudienceAuditRepository", "AudienceAuditRow", "ClientRepository", "ReleaseAuditRepository"]

AudienceAuditRow = tuple[str, str, str, str | None]
"""(subject_id, released fields as JSON text, withheld fields as JSON text, consent event relied on)."""

_audience_subject = AudienceReleaseSubject.__table__  # type: ignore[attr-defined]
_AUDIENCE_COLUMNS: Final = ("release_id", "subject_id", "released", "withheld", "consent_event_id", "released_at")


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> ChannelClient | None:
        return await self.session.get(ChannelClient, client_id)

    async def add(self, client: ChannelClient) -> None:
        self.session.add(client)
        await self.session.flush()

    async def save(self, client: ChannelClient) -> None:
        self.session.add(client)
        await self.session.flush()

    async def all(self) -> Sequence[ChannelClient]:
        statement = select(ChannelClient).order_by(col(ChannelClient.channel), col(ChannelClient.client_id))
        return (await self.session.exec(statement)).all()

    async def disabled_ids(self) -> frozenset[str]:
        statement = select(ChannelClient.client_id).where(col(ChannelClient.disabled).is_(True))
        return frozenset((await self.session.exec(statement)).all())


class ReleaseAuditRepository:
    """The release audit; ``session`` is the request's, or None for a release that opens none.

    A single release writes its row through the writer and a refused attempt's in a transaction of its
    own, so it needs no request session (making one cost ~6 % of the gateway's CPU per release, py-spy
    under ``bench.gateway``): pass ``bind`` instead.
    """

    def __init__(
        self, session: AsyncSession | None, writer: AuditWriter | None = None, *, bind: AsyncEngine | None = None
    ) -> None:
        if session is None and bind is None:
            raise ValueError("a session or an engine to bind to is needed")
        self._session = session
        self.writer = writer
        self._bind: Any = bind if bind is not None else session.bind  # type: ignore[union-attr]

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("this audit repository has no request session")
        return self._session

    def expecting(self) -> AbstractContextManager[None]:
        """A row will be recorded once the caller's await inside this block is over (see
        :meth:`gateway.audit_writer.AuditWriter.expecting`); nothing to do without a writer."""
        return nullcontext() if self.writer is None else self.writer.expecting()

    async def record(self, record: ReleaseRow | ReleaseRecord) -> None:
        """With a writer, the row is committed in a group commit before this returns (see gateway.audit_writer);
        without one, it joins the request's transaction (or, without a session, commits in its own)."""
        if self.writer is not None:
            await self.writer.record(record)
            return
        row = record if isinstance(record, ReleaseRecord) else record.record()
        if self._session is None:
            await self.record_apart(row)
            return
        self._session.add(row)
        await self._session.flush()

    async def record_apart(self, record: ReleaseRecord) -> None:
        """Write ``record`` in its own short transaction, committed whatever becomes of the request's.

        For refused attempts: the request answers with an error, so its own transaction rolls back,
        and the audit row must survive that. Call it before the request's session has written
        anything (on SQLite a second writer would wait for the first).
        """
        async with AsyncSession(self._bind, expire_on_commit=False) as apart, apart.begin():
            apart.add(record)

    async def page(
        self,
        *,
        subject_id: str | None,
        channel: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> Sequence[ReleaseRecord]:
        """Audit rows in (time, id) order after the keyset ``after``; filtered by subject and/or channel.

        Served by ``ix_release_record_channel_time`` / ``ix_release_record_subject_time``.
        """
        statement = select(ReleaseRecord)
        if subject_id is not None:
            statement = statement.where(ReleaseRecord.subject_id == subject_id)
        if channel is not None:
            statement = statement.where(ReleaseRecord.channel == channel)
        if after is not None:
            at, release_id = after
            statement = statement.where(
                or_(
                    col(ReleaseRecord.released_at) > at,
                    and_(col(ReleaseRecord.released_at) == at, col(ReleaseRecord.release_id) > release_id),
                )
            )
        statement = statement.order_by(col(ReleaseRecord.released_at), col(ReleaseRecord.release_id)).limit(limit)
        return (await self.session.exec(statement)).all()


class AudienceAuditRepository:
    """The audit of audience exports, written a page at a time.

    On PostgreSQL a page is one ``COPY`` into ``audience_release_subject`` (binary, through asyncpg)
    inside the caller's transaction; on SQLite one ``executemany``.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open(self, release: AudienceRelease) -> None:
        self.session.add(release)
        await self.session.flush()

    async def record_subjects(self, release_id: str, released_at: datetime, rows: Sequence[AudienceAuditRow]) -> None:
        if not rows:
            return
        connection = await self.session.connection()
        if connection.dialect.name == "postgresql":
            raw = await connection.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(
                "audience_release_subject",
                records=[(release_id, *row, released_at) for row in rows],
                columns=_AUDIENCE_COLUMNS,
            )
            return
        await self.session.exec(  # type: ignore[call-overload]
            insert(_audience_subject),
            params=[
                {
                    "release_id": release_id,
                    "subject_id": subject_id,
                    "released": msgspec.json.decode(released),
                    "withheld": msgspec.json.decode(withheld),
                    "consent_event_id": event_id,
                    "released_at": released_at,
                }
                for subject_id, released, withheld, event_id in rows
            ],
        )

    async def release(self, release_id: str) -> AudienceRelease | None:
        return await self.session.get(AudienceRelease, release_id)

    async def subjects(self, release_id: str) -> list[dict[str, Any]]:
        """Every subject audited for one export, in subject order."""
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(_audience_subject)
            .where(_audience_subject.c.release_id == release_id)
            .order_by(_audience_subject.c.subject_id)
        )
        return [dict(row._mapping) for row in result]
