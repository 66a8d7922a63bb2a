"""The webhook dispatcher: from the consent change feed to signed deliveries, retried until they land.

Two steps, each safe with several gateway replicas on one database:

1. **Ingest**: read the change feed after the cursor (an HTTP call, outside any transaction), then in
   one transaction move the cursor from where it was read to the last change and add one delivery
   per matching webhook. The move is a compare-and-set; a replica that lost the race adds nothing.
   Each change thus becomes its deliveries exactly once, and nothing is lost if the gateway stops
   anywhere in between: the cursor only moves together with the deliveries it stands for.
2. **Send**: claim due deliveries for a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), send each
   outside any transaction, then record the outcome: delivered on 2xx, otherwise the next attempt
   after an exponential, jittered delay, or failed once the attempts run out. A replica that dies
   mid-send leaves the lease to run out and the delivery is sent again: at least once, and the
   ``Tillit-Webhook-Id`` header (the event's ``id``) lets receivers ignore a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
import msgspec
from litestar import Litestar
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.upstream import Upstream
from gateway.webhooks.models import Webhook
from gateway.webhooks.repository import Claimed, DispatchRepository
from gateway.webhooks.schemas import ACTION_TYPES, ConfirmationRequestedEvent, EventType, WebhookEvent
from gateway.webhooks.signing import DELIVERY_ID_HEADER, SIGNATURE_HEADER, backoff_delay, signature_header
from tillit.db import Database
from tillit.policy import Policy
from tillit.problems import TillitError
from tillit.settings import Settings
from tillit.types import utcnow

__all__ = ["DELIVERY_RETENTION", "Dispatcher", "FeedChange", "FeedPage", "enqueue_gateway_event", "webhook_dispatcher"]

_log = logging.getLogger("tillit.gateway.webhooks")
_USER_AGENT: Final = "tillit-webhooks/1"
_PARALLEL_SENDS: Final = 16
DELIVERY_RETENTION: Final = timedelta(days=30)
"""Finished deliveries (they name subjects) are kept this long for the deliveries endpoint, then deleted."""
_PRUNE_EVERY: Final = timedelta(hours=1)


class FeedChange(msgspec.Struct):
    seq: int
    subject_id: str
    purpose: str | None
    action: str
    occurred_at: datetime
    event_id: str | None


class FeedPage(msgspec.Struct):
    changes: list[FeedChange]
    last_seq: int


def _wants(webhook: Webhook, change: FeedChange, event_type: str, policy: Policy) -> bool:
    """Whether the webhook's channel may hear of this change: its type, and a purpose it is registered for."""
    if event_type not in webhook.event_types:
        return False
    channel = policy.channels.get(webhook.channel)
    if channel is None:
        return False
    return change.purpose is None or change.purpose in channel.purposes


def _delivery_row(webhook: Webhook, change_seq: int, event: WebhookEvent, now: datetime) -> dict[str, Any]:
    return {
        "id": event.id,
        "webhook_id": webhook.id,
        "change_seq": change_seq,
        "event_type": event.type,
        "payload": msgspec.json.encode(event).decode(),
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "last_attempt_at": None,
        "last_status_code": None,
        "last_error": None,
        "delivered_at": None,
        "created_at": now,
    }


async def enqueue_gateway_event(
    session: AsyncSession,
    event_type: EventType,
    subject_id: str,
    purpose: str | None,
    now: datetime,
    *,
    policy: Policy | None = None,
    confirmation: tuple[str, datetime] | None = None,
) -> int:
    """Add a delivery of an event the gateway itself raises to every webhook subscribed to its type.

    With a ``purpose`` and the ``policy``, only webhooks whose channel is registered for the purpose
    hear of it. It joins the caller's transaction (the outbox: committed with the request or not at
    all); the dispatcher sends it like any other. Feed changes carry the feed's positive
    ``change_seq``; a gateway event takes a random negative one, so the two never meet in the
    uniqueness of (webhook, change). The number of deliveries added.
    """
    repository = DispatchRepository(session)
    change_seq = -1 - secrets.randbits(62)
    rows = []
    for webhook in await repository.webhooks():
        if event_type not in webhook.event_types:
            continue
        if purpose is not None and policy is not None:
            channel = policy.channels.get(webhook.channel)
            if channel is None or purpose not in channel.purposes:
                continue
        fields: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "subject_id": subject_id,
            "purpose": purpose,
            "occurred_at": now,
            "event_id": None,
        }
        event = (
            ConfirmationRequestedEvent(
                **fields, confirmation_token=confirmation[0], confirmation_expires_at=confirmation[1]
            )
            if confirmation is not None
            else WebhookEvent(**fields)
        )
        rows.append(_delivery_row(webhook, change_seq, event, now))
    await repository.add_deliveries(rows)
    return len(rows)


class Dispatcher:
    def __init__(
        self,
        database: Database,
        upstream: Upstream,
        policy: Callable[[], Policy],
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        batch: int = 200,
    ) -> None:
        self.database = database
        self.upstream = upstream
        self.current_policy = policy
        """The policy in force now: it may be reloaded while the dispatcher runs."""
        self.settings = settings
        self.clock = clock
        self.batch = batch
        self.lease = timedelta(seconds=max(60.0, 3 * settings.webhook_timeout))
        self.pruned_at: datetime | None = None
        # Its own client: short timeouts, no redirects (a 3xx is a failed attempt), no proxies from
        # the environment, and nothing shared with the calls to the internal services.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=_PARALLEL_SENDS, max_keepalive_connections=_PARALLEL_SENDS),
            headers={"User-Agent": _USER_AGENT},
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def run_once(self) -> tuple[int, int]:
        """Ingest every change waiting in the feed, then send what is due; (changes, attempts)."""
        changes = 0
        while True:
            taken = await self.ingest()
            changes += taken
            if taken < self.batch:
                break
        attempts = await self.send_due()
        await self.prune()
        return changes, attempts

    async def prune(self) -> int:
        """Delete finished deliveries past :data:`DELIVERY_RETENTION` (at most once an hour)."""
        now = self.clock()
        if self.pruned_at is not None and now - self.pruned_at < _PRUNE_EVERY:
            return 0
        self.pruned_at = now
        async with self.database.sessionmaker() as session, session.begin():
            return await DispatchRepository(session).forget_finished(now - DELIVERY_RETENTION)

    async def ingest(self) -> int:
        """Turn one page of the change feed into deliveries; the number of changes taken."""
        async with self.database.sessionmaker() as session:
            cursor = await DispatchRepository(session).cursor()
        page = await self.upstream.consent_changes(cursor, self.batch, FeedPage)
        if not page.changes:
            return 0
        now = self.clock()
        async with self.database.sessionmaker() as session, session.begin():
            repository = DispatchRepository(session)
            if not await repository.advance_cursor(cursor, page.last_seq, now):
                return 0
            webhooks = await repository.webhooks()
            await repository.add_deliveries(
                [row for change in page.changes for row in self._deliveries(change, webhooks, now)]
            )
        return len(page.changes)

    def _deliveries(self, change: FeedChange, webhooks: Any, now: datetime) -> list[dict[str, Any]]:
        event_type = ACTION_TYPES.get(change.action)
        if event_type is None:
            _log.warning("change %d has an unknown action %r; no webhook hears of it", change.seq, change.action)
            return []
        policy = self.current_policy()
        rows = []
        for webhook in webhooks:
            if not _wants(webhook, change, event_type, policy):
                continue
            event = WebhookEvent(
                id=str(uuid.uuid4()),
                type=event_type,  # type: ignore[arg-type]
                subject_id=change.subject_id,
                purpose=change.purpose,
                occurred_at=change.occurred_at,
                event_id=change.event_id,
            )
            rows.append(_delivery_row(webhook, change.seq, event, now))
        return rows

    async def send_due(self) -> int:
        """Send every delivery due now (one batch); the number of attempts made."""
        now = self.clock()
        async with self.database.sessionmaker() as session, session.begin():
            claimed = await DispatchRepository(session).claim_due(now, now + self.lease, self.batch)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(_PARALLEL_SENDS)

        async def attempt(delivery: Claimed) -> None:
            async with gate:
                outcome = await self._send(delivery)
            async with self.database.sessionmaker() as session, session.begin():
                await DispatchRepository(session).record_outcome(delivery.id, outcome)

        await asyncio.gather(*(attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _send(self, delivery: Claimed) -> dict[str, Any]:
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            DELIVERY_ID_HEADER: delivery.id,
            SIGNATURE_HEADER: signature_header(delivery.secret, int(time.time()), body),
        }
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self.settings.webhook_timeout * 2):
                # The answer's body is never read: only its status counts.
                async with self.client.stream("POST", delivery.url, content=body, headers=headers) as response:
                    status = response.status_code
        except (httpx.HTTPError, TimeoutError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] if str(exc) else type(exc).__name__
        now = self.clock()
        attempts = delivery.attempts + 1
        outcome: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "last_status_code": status}
        if status is not None and 200 <= status < 300:
            return {**outcome, "status": "delivered", "delivered_at": now, "next_attempt_at": None, "last_error": None}
        if status is not None:
            error = f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        outcome["last_error"] = error
        if attempts >= self.settings.webhook_max_attempts:
            return {**outcome, "status": "failed", "next_attempt_at": None}
        delay = backoff_delay(
            attempts, self.settings.webhook_backoff_seconds, self.settings.webhook_backoff_max_seconds
        )
        return {**outcome, "next_attempt_at": now + timedelta(seconds=delay)}


def webhook_dispatcher(
    settings: Settings, upstream: Upstream
) -> tuple[Callable[[Litestar], None], Callable[[Litestar], Any]]:
    """Start and stop hooks of the dispatcher loop (every ``TILLIT_WEBHOOK_POLL_SECONDS``; 0 disables).

    Stopping lets a round in progress finish (its sends are bounded by the webhook timeout), so a
    delivery being sent is recorded instead of waiting out its lease after a restart.
    """
    tasks: list[asyncio.Task[None]] = []
    dispatchers: list[Dispatcher] = []
    stopping = asyncio.Event()

    async def loop(dispatcher: Dispatcher) -> None:
        while not stopping.is_set():
            try:
                await dispatcher.run_once()
            except TillitError as exc:
                _log.warning("webhook dispatch paused: %s", exc.detail)
            except Exception:
                _log.exception("webhook dispatch failed; it will try again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), settings.webhook_poll_seconds)

    def start(app: Litestar) -> None:
        if settings.webhook_poll_seconds <= 0:
            return
        dispatcher = Dispatcher(app.state.database, upstream, lambda: app.state.policy, settings)
        dispatchers.append(dispatcher)
        tasks.append(asyncio.get_running_loop().create_task(loop(dispatcher)))

    async def stop(_: Litestar) -> None:
        stopping.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2 * settings.webhook_timeout + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for dispatcher in dispatchers:
            await dispatcher.close()

    return start, stop
