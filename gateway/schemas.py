"""What the gateway's public API accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from gateway.release import WithheldReason
from tillit.policy import Language
from tillit.types import IPAddress, PurposeKey, check_utc_representable

__all__ = [
    "AuditEntry",
    "AuditPage",
    "AuditWithheld",
    "CapturedConsent",
    "ChannelEvidence",
    "ConsentConfirmation",
    "OAuthError",
    "ProfileRelease",
    "RulesDecision",
    "RulesReason",
    "SubjectDecision",
    "TokenResponse",
    "WithheldField",
]


class WithheldField(msgspec.Struct):
    field: str
    reason: WithheldReason


class ProfileRelease(msgspec.Struct):
    """The fields released for one purpose; withheld fields are named with the reason, never the value."""

    subject_id: str
    purpose: str
    fields: dict[str, Any]
    withheld: list[WithheldField]
    release_id: str
    transformed: dict[str, str] = {}
    """Released fields whose value the channel's policy transformed, with the transform (``email: sha256_email``)."""


class ChannelEvidence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How the channel captured the consent (checkout box, POS terminal). IPs are truncated when stored."""

    ip: IPAddress | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    page: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    language: Language | None = None


class CapturedConsent(msgspec.Struct, forbid_unknown_fields=True):
    purpose: PurposeKey
    action: Literal["give", "refuse", "withdraw"]
    evidence: ChannelEvidence = msgspec.field(default_factory=ChannelEvidence)
    notice_version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    collected_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        check_utc_representable("collected_at", self.collected_at)


class ConsentConfirmation(msgspec.Struct, forbid_unknown_fields=True):
    """The token from a double opt-in link, handed back by whatever page the link opened."""

    token: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    evidence: ChannelEvidence = msgspec.field(default_factory=ChannelEvidence)


class OAuthError(msgspec.Struct, omit_defaults=True):
    """Token endpoint errors keep the shape OAuth2 clients expect (RFC 6749 §5.2)."""

    error: str
    error_description: str | None = None


class TokenResponse(msgspec.Struct, omit_defaults=True):
    access_token: str
    token_type: str
    expires_in: int
    scope: str | None = None


class AuditWithheld(msgspec.Struct):
    field: str
    reason: str


class AuditEntry(msgspec.Struct):
    """One release (or refused attempt) as the audit keeps it: who got which fields of whom, under what."""

    release_id: str
    outcome: Literal["released", "refused"]
    channel: str
    client_id: str
    purpose: str
    subject_id: str
    released: list[str]
    withheld: list[AuditWithheld]
    consent_event_ids: list[str]
    at: datetime


class AuditPage(msgspec.Struct):
    """A page in (time, release id) order; pass ``next_cursor`` as ``after`` for the next one."""

    items: list[AuditEntry]
    next_cursor: str | None


class RulesReason(msgspec.Struct):
    rule: str
    explanation: str


class RulesDecision(msgspec.Struct):
    """The rules service's answer (``POST /v1/decide``), decoded strictly: anything else is a 503.
    ``candidates_held``: the rules service holds the candidate list named by the request's
    ``candidates_digest`` (see :meth:`gateway.upstream.Upstream.decide`); not passed on."""

    purpose: str
    segments: list[str]
    variants: dict[str, str]
    products: list[str]
    reasons: list[RulesReason]
    candidates_held: bool = False


class SubjectDecision(msgspec.Struct):
    """A personalization decision made on the profile released for ``purpose`` (audited as ``release_id``)."""

    subject_id: str
    purpose: str
    release_id: str
    segments: list[str]
    variants: dict[str, str]
    products: list[str]
    reasons: list[RulesReason]
