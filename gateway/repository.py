"""Every query of the gateway."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.models import ChannelClient, ReleaseRecord

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
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, record: ReleaseRecord) -> None:
        self.session.add(record)
        await self.session.flush()
