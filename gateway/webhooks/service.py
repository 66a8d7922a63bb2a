"""Registering webhooks, and which URLs may receive them."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from gateway.oauth import Caller
from gateway.webhooks.models import Webhook
from gateway.webhooks.repository import WebhookRepository
from gateway.webhooks.schemas import (
    EVENT_TYPES,
    DeliveryList,
    DeliveryOut,
    RegisteredWebhook,
    WebhookIn,
    WebhookList,
    WebhookOut,
)
from gateway.webhooks.signing import new_secret
from tillit.problems import NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["MAX_WEBHOOKS_PER_CLIENT", "SCOPE", "WebhookService", "check_webhook_url"]

SCOPE: Final = "webhooks:manage"
MAX_WEBHOOKS_PER_CLIENT: Final = 10
_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME: Final = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)+[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?$")
"""Fully qualified, ASCII (IDNs as punycode), ending in a top-level domain that is not a number."""
_INTERNAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".cluster.local", ".svc", ".home.arpa", ".lan")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost."})


def _refuse(problem: str) -> Unprocessable:
    return Unprocessable(f"the webhook URL {problem}", slug="invalid-webhook-url")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_webhook_url(url: str, *, allow_insecure_loopback: bool) -> str:
    """``url`` if the gateway may send webhooks there; a 422 naming the problem otherwise.

    https to a public host name or public address only: no credentials or fragment in the URL, no
    private, link-local or loopback address, no single-label or cluster-internal name (the gateway
    sits inside the platform's network; a webhook must not become a way into it). With
    ``allow_insecure_loopback`` (a laptop, the test suites) http and https to loopback pass too.
    Names that resolve to private addresses are the egress network policy's to stop.
    """
    if any(ord(character) <= 32 or ord(character) == 127 for character in url):
        raise _refuse("contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise _refuse(f"is not a valid URL: {exc}") from exc
    if parts.scheme not in ("https", "http"):
        raise _refuse(f"must use https (got {parts.scheme or 'no'} scheme)")
    if not host:
        raise _refuse("names no host")
    if parts.username is not None or parts.password is not None:
        raise _refuse("must not carry credentials; the signature authenticates the gateway")
    if parts.fragment:
        raise _refuse("must not have a fragment")
    loopback = _is_loopback(host)
    if loopback and allow_insecure_loopback:
        return url
    if parts.scheme != "https":
        raise _refuse("must use https (http is allowed only to loopback, and only where the gateway allows it)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if not address.is_global:
            raise _refuse(f"points at a private, loopback or reserved address ({host})")
        return url
    if loopback or host.endswith(_INTERNAL_SUFFIXES) or not _HOSTNAME.fullmatch(host.rstrip(".")):
        raise _refuse(f"must name a public host (got {host!r}: not a fully qualified public name)")
    return url


def _out(webhook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=webhook.id,
        url=webhook.url,
        channel=webhook.channel,
        event_types=list(webhook.event_types),  # type: ignore[arg-type]
        created_at=as_utc(webhook.created_at),
    )


class WebhookService:
    def __init__(
        self,
        repository: WebhookRepository,
        *,
        allow_insecure_loopback: bool,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.allow_insecure_loopback = allow_insecure_loopback
        self.clock = clock

    async def register(self, caller: Caller, request: WebhookIn) -> RegisteredWebhook:
        caller.require(SCOPE)
        url = check_webhook_url(request.url, allow_insecure_loopback=self.allow_insecure_loopback)
        if await self.repository.count_for(caller.client_id) >= MAX_WEBHOOKS_PER_CLIENT:
            raise Unprocessable(
                f"a client may register at most {MAX_WEBHOOKS_PER_CLIENT} webhooks; delete one first",
                slug="too-many-webhooks",
            )
        chosen = set(request.event_types or EVENT_TYPES)
        webhook = Webhook(
            id=str(uuid.uuid4()),
            client_id=caller.client_id,
            channel=caller.channel,
            url=url,
            secret=new_secret(),
            event_types=[event_type for event_type in EVENT_TYPES if event_type in chosen],
            created_at=self.clock(),
        )
        await self.repository.add(webhook)
        shown = _out(webhook)
        return RegisteredWebhook(
            id=shown.id,
            url=shown.url,
            channel=shown.channel,
            event_types=shown.event_types,
            created_at=shown.created_at,
            secret=webhook.secret,
        )

    async def list(self, caller: Caller) -> WebhookList:
        caller.require(SCOPE)
        return WebhookList(webhooks=[_out(webhook) for webhook in await self.repository.list_for(caller.client_id)])

    async def _own(self, caller: Caller, webhook_id: str) -> Webhook:
        caller.require(SCOPE)
        webhook = await self.repository.get_for(caller.client_id, webhook_id)
        if webhook is None:
            raise NotFound(f"this client has no webhook {webhook_id!r}", slug="webhook-not-found")
        return webhook

    async def get(self, caller: Caller, webhook_id: str) -> WebhookOut:
        return _out(await self._own(caller, webhook_id))

    async def delete(self, caller: Caller, webhook_id: str) -> None:
        """The webhook and its deliveries go; nothing more is sent to it."""
        await self.repository.delete((await self._own(caller, webhook_id)).id)

    async def deliveries(self, caller: Caller, webhook_id: str, status: str | None, limit: int) -> DeliveryList:
        webhook = await self._own(caller, webhook_id)
        rows = await self.repository.deliveries(webhook.id, status, limit)
        return DeliveryList(
            deliveries=[
                DeliveryOut(
                    id=row.id,
                    event_type=row.event_type,  # type: ignore[arg-type]
                    status=row.status,  # type: ignore[arg-type]
                    attempts=row.attempts,
                    created_at=as_utc(row.created_at),
                    next_attempt_at=as_utc(row.next_attempt_at) if row.next_attempt_at else None,
                    last_attempt_at=as_utc(row.last_attempt_at) if row.last_attempt_at else None,
                    last_status_code=row.last_status_code,
                    last_error=row.last_error,
                    delivered_at=as_utc(row.delivered_at) if row.delivered_at else None,
                )
                for row in rows
            ]
        )
