"""Every query of the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
