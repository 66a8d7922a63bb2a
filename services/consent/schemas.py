"""What the consent service's API accepts and answers (msgspec Structs at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from tillit.types import IPAddress, PurposeKey

__all__ = [
    "ConsentEventOut",
    "ConsentHistory",
    "ConsentStatus",
    "ConsentStatusOut",
    "EventAction",
    "Evidence",
    "PurposeOut",
    "RecordConsent",
    "RecordedConsent",
    "SubjectConsents",
]

SourceName = Annotated[str, msgspec.Meta(pattern=r"^[a-z_]+(:[A-Za-z0-9._-]{1,64})?$", max_length=80)]


class Evidence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How the consent was captured. IP addresses are truncated before they are stored."""

    ip: IPAddress | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    page: Annotated[str, msgspec.Meta(max_length=2048)] | None = None


EventAction = Literal["given", "refused", "withdrawn", "expired", "pending", "confirmed"]
ConsentStatus = Literal["given", "refused", "withdrawn", "expired", "pending"]


class RecordConsent(msgspec.Struct, forbid_unknown_fields=True):
    purpose: PurposeKey
    action: Literal["give", "refuse", "withdraw"]
    source: SourceName
    evidence: Evidence = msgspec.field(default_factory=Evidence)
    notice_version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    collected_at: (
        Annotated[
            datetime,
            msgspec.Meta(tz=True, description="When it was captured, if before now (checkout box, import)"),
        ]
        | None
    ) = None


class ConsentEventOut(msgspec.Struct):
    id: str
    subject_id: str
    purpose: str
    action: EventAction
    notice_version: int | None
    source: str
    collected_at: datetime
    recorded_at: datetime
    evidence: Evidence
    seq: int
    hash: str


class ConsentStatusOut(msgspec.Struct):
    purpose: str
    status: ConsentStatus
    active: bool
    since: datetime
    event_id: str
    notice_version: int | None
    expires_at: datetime | None


class RecordedConsent(msgspec.Struct):
    event: ConsentEventOut
    state: ConsentStatusOut


class ConsentHistory(msgspec.Struct):
    subject_id: str
    events: list[ConsentEventOut]


class SubjectConsents(msgspec.Struct):
    subject_id: str
    as_of: datetime
    consents: list[ConsentStatusOut]


class PurposeOut(msgspec.Struct):
    key: str
    title: str
    legal_basis: str
    consent_lasts: str | None
