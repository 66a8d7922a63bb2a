"""Every query of the gateway."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import ChannelClient, ReleaseRecord

if TYPE_CHECKING:
    from gateway.audit_writer import AuditWriter

__all__ = ["ClientRepository", "ReleaseAuditRepository"]


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
    def __init__(self, session: AsyncSession, writer: AuditWriter | None = None) -> None:
        self.session = session
        self.writer = writer

    async def record(self, record: ReleaseRecord) -> None:
        """With a writer, the row is committed in a group commit before this returns (see gateway.audit_writer);
        without one, it joins the request's transaction."""
        if self.writer is not None:
            await self.writer.record(record)
            return
        self.session.add(record)
        await self.session.flush()

    async def record_apart(self, record: ReleaseRecord) -> None:
        """Write ``record`` in its own short transaction, committed whatever becomes of the request's.

        For refused attempts: the request answers with an error, so its own transaction rolls back,
        and the audit row must survive that. Call it before the request's session has written
        anything (on SQLite a second writer would wait for the first).
        """
        async with AsyncSession(self.session.bind, expire_on_commit=False) as apart, apart.begin():
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
