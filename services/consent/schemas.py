"""What the consent service's API accepts and answers (msgspec Structs at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from services.consent.repository import ActiveRow
from tillit.patterns import exact
from tillit.policy import Language
from tillit.types import IPAddress, PurposeKey, SubjectId, check_utc_representable

__all__ = [
    "ActiveConsents",
    "ConfirmConsent",
    "ConsentEventOut",
    "ConsentHistory",
    "ConsentStats",
    "ConsentStatus",
    "ConsentStatusOut",
    "EventAction",
    "Evidence",
    "GpcOutcome",
    "GpcSignal",
    "ImportBatch",
    "ImportResult",
    "NoticeShown",
    "PendingConfirmation",
    "PurposeOut",
    "PurposeStates",
    "ReceiptOut",
    "ReconsentItem",
    "ReconsentNeeded",
    "RecordConsent",
    "RecordedConsent",
    "SubjectBatch",
    "SubjectConsents",
    "SubjectPurposeState",
]

SourceName = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z_]+(:[A-Za-z0-9._-]{1,64})?$"), max_length=80)]


class Evidence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How the consent was captured. IP addresses are truncated before they are stored."""

    ip: IPAddress | None = None
    user_agent: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    page: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    language: Language | None = None
    """The language the notice was shown in."""
    gpc: bool | None = None
    """The request carried a Global Privacy Control signal (``Sec-GPC: 1``)."""


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

    def __post_init__(self) -> None:
        check_utc_representable("collected_at", self.collected_at)


class NoticeShown(msgspec.Struct):
    version: int
    language: str
    title: str
    text: str


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
    notice: NoticeShown | None = None


class ConsentStatusOut(msgspec.Struct):
    purpose: str
    status: ConsentStatus
    active: bool
    since: datetime
    event_id: str
    notice_version: int | None
    expires_at: datetime | None
    needs_reconsent: bool = False
    """Given under a notice version that a material change has since replaced: it does not count."""


class PendingConfirmation(msgspec.Struct):
    """Double opt-in: the consent counts once this token comes back (the channel e-mails the link)."""

    token: str
    expires_at: datetime


class RecordedConsent(msgspec.Struct):
    event: ConsentEventOut
    state: ConsentStatusOut
    receipt: str | None = None
    """Signed Kantara consent receipt (compact JWS) for given and withdrawn events."""
    confirmation: PendingConfirmation | None = None


class ConfirmConsent(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class GpcSignal(msgspec.Struct, forbid_unknown_fields=True):
    evidence: Evidence = msgspec.field(default_factory=Evidence)


class GpcOutcome(msgspec.Struct):
    subject_id: str
    refused: list[RecordedConsent]
    """Sale-or-sharing purposes refused now; purposes already off or explicitly opted into since are left."""


class ImportBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Consents collected elsewhere: CSV with a header row, or NDJSON; one consent per row.

    Columns / keys: subject_id, purpose, action (give, refuse, withdraw), collected_at (ISO 8601 with
    time zone), and optionally notice_version, language, ip, page.
    """

    format: Literal["csv", "ndjson"]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=4 * 1024 * 1024)]


class ImportResult(msgspec.Struct):
    rows: int
    recorded: int
    already_imported: int


class ReceiptOut(msgspec.Struct):
    event_id: str
    receipt: str


class ReconsentItem(msgspec.Struct):
    purpose: str
    consented_version: int
    current: NoticeShown


class ReconsentNeeded(msgspec.Struct):
    subject_id: str
    purposes: list[ReconsentItem]


class ConsentHistory(msgspec.Struct):
    subject_id: str
    events: list[ConsentEventOut]


class SubjectConsents(msgspec.Struct):
    subject_id: str
    as_of: datetime
    consents: list[ConsentStatusOut]


class ConsentStats(msgspec.Struct):
    """How many subjects' consent counts now, per purpose based on consent (``tillit policy diff``).

    Counted like the release rule counts: given, not expired, under a notice version that still counts.
    """

    as_of: datetime
    active: dict[str, int]


class PurposeOut(msgspec.Struct):
    key: str
    title: str
    legal_basis: str
    consent_lasts: str | None


class ActiveConsents(msgspec.Struct):
    """One page of the subjects whose consent to ``purpose`` counts now, in subject order.

    Fewer than ``limit`` rows means the end; otherwise ask again with ``after`` = the last subject.
    """

    purpose: str
    as_of: datetime
    consents: list[ActiveRow]


class SubjectBatch(msgspec.Struct, forbid_unknown_fields=True):
    subject_ids: Annotated[list[SubjectId], msgspec.Meta(max_length=5000)]


class SubjectPurposeState(ConsentStatusOut):
    subject_id: str = ""


class PurposeStates(msgspec.Struct):
    """The state of one purpose for each subject asked about that has one (others have none)."""

    purpose: str
    as_of: datetime
    states: list[SubjectPurposeState]
