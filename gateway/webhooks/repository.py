"""Every query of the webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import delete, func, insert, update
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.webhooks.models import FEED_CURSOR, Webhook, WebhookCursor, WebhookDelivery

__all__ = ["Claimed", "DispatchRepository", "WebhookRepository"]

_webhook = Webhook.__table__  # type: ignore[attr-defined]
_delivery = WebhookDelivery.__table__  # type: ignore[attr-defined]
_cursor = WebhookCursor.__table__  # type: ignore[attr-defined]


class Claimed(msgspec.Struct, frozen=True):
    """A delivery this process may send until its lease runs out, with where and how to sign it."""

    id: str
    payload: str
    attempts: int
    url: str
    secret: str


class WebhookRepository:
    """Registrations and their delivery history, always within one client's own webhooks."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def count_for(self, client_id: str) -> int:
        result = await self.session.exec(  # type: ignore[call-overload]
            core_select(func.count()).select_from(_webhook).where(_webhook.c.client_id == client_id)
        )
        return int(result.scalar_one())

    async def add(self, webhook: Webhook) -> None:
        self.session.add(webhook)
        await self.session.flush()

    async def list_for(self, client_id: str) -> Sequence[Webhook]:
        result = await self.session.exec(
            select(Webhook).where(Webhook.client_id == client_id).order_by(col(Webhook.created_at), col(Webhook.id))
        )
        return result.all()

    async def get_for(self, client_id: str, webhook_id: str) -> Webhook | None:
        result = await self.session.exec(
            select(Webhook).where(Webhook.client_id == client_id, Webhook.id == webhook_id)
        )
        return result.first()

    async def delete(self, webhook_id: str) -> None:
        await self.session.exec(delete(_delivery).where(_delivery.c.webhook_id == webhook_id))  # type: ignore[call-overload]
        await self.session.exec(delete(_webhook).where(_webhook.c.id == webhook_id))  # type: ignore[call-overload]

    async def deliveries(self, webhook_id: str, status: str | None, limit: int) -> Sequence[WebhookDelivery]:
        query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        query = query.order_by(col(WebhookDelivery.change_seq).desc()).limit(limit)
        return (await self.session.exec(query)).all()


class DispatchRepository:
    """What the dispatcher reads and writes: the feed cursor, new deliveries, due ones, outcomes."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def cursor(self) -> int:
        result = await self.session.exec(core_select(_cursor.c.seq).where(_cursor.c.name == FEED_CURSOR))  # type: ignore[call-overload]
        return int(result.scalar_one())

    async def advance_cursor(self, expected: int, to: int, now: datetime) -> bool:
        """Move the cursor from ``expected`` to ``to``; False if another replica moved it first.

        A write, and the transaction's first statement: SQLite takes its write lock here and
        PostgreSQL locks the row, so the deliveries added next belong to this move only.
        """
        result = await self.session.exec(  # type: ignore[call-overload]
            update(_cursor)
            .where(_cursor.c.name == FEED_CURSOR, _cursor.c.seq == expected)
            .values(seq=to, updated_at=now)
        )
        return bool(result.rowcount == 1)

    async def webhooks(self) -> Sequence[Webhook]:
        return (await self.session.exec(select(Webhook))).all()

    async def add_deliveries(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.session.exec(insert(_delivery), params=rows)  # type: ignore[call-overload]

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due deliveries: nobody else sends them before ``lease_until``.

        On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets replicas claim side by side without waiting
        on or taking each other's rows; on SQLite the UPDATE holds the one write lock.
        """
        due = (
            core_select(_delivery.c.id)
            .where(_delivery.c.status == "pending", _delivery.c.next_attempt_at <= now)
            .order_by(_delivery.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = await self.session.exec(  # type: ignore[call-overload]
            update(_delivery)
            .where(_delivery.c.id.in_(due))
            .values(next_attempt_at=lease_until)
            .returning(_delivery.c.id, _delivery.c.webhook_id, _delivery.c.payload, _delivery.c.attempts)
        )
        rows = claimed.all()
        if not rows:
            return []
        targets = await self.session.exec(  # type: ignore[call-overload]
            core_select(_webhook.c.id, _webhook.c.url, _webhook.c.secret).where(
                _webhook.c.id.in_({row.webhook_id for row in rows})
            )
        )
        by_id = {target.id: target for target in targets}
        return [
            Claimed(
                id=row.id,
                payload=row.payload,
                attempts=row.attempts,
                url=by_id[row.webhook_id].url,
                secret=by_id[row.webhook_id].secret,
            )
            for row in rows
            if row.webhook_id in by_id
        ]

    async def forget_finished(self, before: datetime) -> int:
        """Delete delivered and failed deliveries created before ``before``; how many."""
        result = await self.session.exec(  # type: ignore[call-overload]
            delete(_delivery).where(_delivery.c.status != "pending", _delivery.c.created_at < before)
        )
        return int(result.rowcount or 0)

    async def record_outcome(self, delivery_id: str, values: dict[str, Any]) -> None:
        await self.session.exec(  # type: ignore[call-overload]
            update(_delivery).where(_delivery.c.id == delivery_id, _delivery.c.status == "pending").values(**values)
        )
