"""What the webhook API accepts and answers, and the event a receiver gets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "ACTION_TYPES",
    "EVENT_TYPES",
    "ConfirmationRequestedEvent",
    "DeliveryList",
    "DeliveryOut",
    "DeliveryStatus",
    "EventType",
    "RegisteredWebhook",
    "WebhookEvent",
    "WebhookIn",
    "WebhookList",
    "WebhookOut",
]

EventType = Literal[
    "consent.withdrawn",
    "consent.refused",
    "consent.expired",
    "subject.erased",
    "preference_link.requested",
    "consent.confirmation_requested",
]
EVENT_TYPES: Final[tuple[str, ...]] = EventType.__args__  # type: ignore[attr-defined]
ACTION_TYPES: Final = {
    "withdrawn": "consent.withdrawn",
    "refused": "consent.refused",
    "expired": "consent.expired",
    "erased": "subject.erased",
}
"""The change feed's actions and the event types a receiver sees.

Two event types do not come from the feed; the gateway raises them from the shopper API:
``preference_link.requested`` when a shopper with an expired preference link asks for a new one
(``POST /v1/shopper/link-requests``), so that the shop's e-mail channel sends a fresh link; and
``consent.confirmation_requested`` when a shopper gives a double opt-in consent on the preference
page, carrying the confirmation token the channel e-mails (:class:`ConfirmationRequestedEvent`).
"""

DeliveryStatus = Literal["pending", "delivered", "failed"]


class WebhookIn(msgspec.Struct, forbid_unknown_fields=True):
    url: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=2048,
            description="https URL that receives the events (http only to loopback, where the gateway allows it)",
        ),
    ]
    event_types: (
        Annotated[
            list[EventType],
            msgspec.Meta(min_length=1, max_length=len(EVENT_TYPES), description="Default: every event type"),
        ]
        | None
    ) = None


class WebhookOut(msgspec.Struct):
    id: str
    url: str
    channel: str
    event_types: list[EventType]
    created_at: datetime


class RegisteredWebhook(WebhookOut):
    secret: Annotated[
        str,
        msgspec.Meta(description="Signs every delivery (Tillit-Signature); shown only now, keep it safe"),
    ]


class WebhookList(msgspec.Struct):
    webhooks: list[WebhookOut]


class DeliveryOut(msgspec.Struct):
    id: str
    event_type: EventType
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class DeliveryList(msgspec.Struct):
    deliveries: list[DeliveryOut]


class WebhookEvent(msgspec.Struct):
    """The body of a delivery. ``id`` is the same on every retry: receivers use it to ignore repeats."""

    id: str
    type: EventType
    subject_id: str
    purpose: str | None
    occurred_at: datetime
    event_id: str | None


class ConfirmationRequestedEvent(WebhookEvent):
    """``consent.confirmation_requested``: e-mail the shopper a link that hands this token back to
    ``POST /v1/consents/confirmations``; the consent counts from then on."""

    confirmation_token: str
    confirmation_expires_at: datetime
