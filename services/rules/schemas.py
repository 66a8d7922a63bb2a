"""What the rules service's API accepts and answers."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from services.rules.catalogue import PRODUCT_IDS, Product
from services.rules.conditions import Condition
from services.rules.definitions import Title
from tillit.patterns import exact
from tillit.types import ProfileFieldName, PurposeKey

__all__ = [
    "CONTEXT_ID_PATTERN",
    "DIGEST_PATTERN",
    "MAX_BATCH_DECISIONS",
    "MAX_CANDIDATES",
    "MAX_SLOTS",
    "NAME_PATTERN",
    "SLOT_PATTERN",
    "CandidateList",
    "CandidatesOnly",
    "Condition",
    "Decision",
    "DecisionBatch",
    "DecisionBatchAnswer",
    "DecisionContext",
    "DecisionReason",
    "DecisionRequest",
    "DefinitionOut",
    "Evaluation",
    "EvaluationRequest",
    "ExposureCount",
    "FlatCondition",
    "RawCandidatesDecisionRequest",
    "SegmentIn",
    "SegmentMatch",
    "SegmentMatchRequest",
    "SegmentOut",
    "check_candidate_ids",
]

NAME_PATTERN = exact(r"^[a-z][a-z0-9_-]{0,31}$")
SLOT_PATTERN = exact(r"^[a-z][a-z0-9_-]{0,31}(\.[a-z][a-z0-9_-]{0,31})?$")
MAX_CANDIDATES = 500
CONTEXT_ID_PATTERN = exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MAX_SLOTS = 10
DIGEST_PATTERN = exact(r"^[0-9a-f]{64}$")

Scalar = Annotated[str, msgspec.Meta(max_length=200)] | int | float | bool


class FlatCondition(msgspec.Struct, forbid_unknown_fields=True):
    """The first segment API's ``field op value`` (all of a list must hold); kept for its callers."""

    field: ProfileFieldName
    op: Literal["eq", "ne", "in", "contains", "gte", "lte"]
    value: Scalar | Annotated[list[Scalar], msgspec.Meta(max_length=50)]


class SegmentIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A segment through the first API: a flat ``conditions`` list (all must hold) or a ``when`` tree."""

    key: Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"))]
    title: Title
    purpose: PurposeKey
    conditions: Annotated[list[FlatCondition], msgspec.Meta(min_length=1, max_length=20)] | None = None
    when: Condition | None = None


class SegmentOut(msgspec.Struct):
    key: str
    title: str
    purpose: str
    when: Condition
    version: int
    status: str
    created_at: datetime


class DefinitionOut(msgspec.Struct, omit_defaults=True):
    """A stored version of a definition; ``status`` is ``active`` or ``disabled`` (``problem`` says why)."""

    kind: str
    key: str
    version: int
    purpose: str
    title: str
    status: Literal["active", "disabled"]
    definition: dict[str, Any]
    created_at: datetime
    latest: bool = True
    problem: str | None = None


class ExposureCount(msgspec.Struct):
    """How often an experiment's arm was shown on one day (UTC): an aggregate, no one is named."""

    experiment: str
    arm: str
    day: date
    count: int


class EvaluationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A profile already filtered by the gateway for ``purpose``."""

    purpose: PurposeKey
    profile: Annotated[dict[ProfileFieldName, Any], msgspec.Meta(max_length=100)]


class Evaluation(msgspec.Struct):
    purpose: str
    segments: list[str]


class DecisionContext(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The visit a decision is for: a small, bounded set that segments and rules may read
    (``context.<key>``). Nothing here identifies the shopper."""

    page: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Page type, e.g. home, product")] | None = None
    product_id: Annotated[str, msgspec.Meta(pattern=CONTEXT_ID_PATTERN, description="Product on screen")] | None = None
    product_brand: Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="Its brand")] | None = None
    department: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Department browsed")] | None = None
    category: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Category browsed")] | None = None
    visit_count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    days_since_last_visit: Annotated[int, msgspec.Meta(ge=0, le=36_500)] | None = None
    days_since_last_purchase: Annotated[int, msgspec.Meta(ge=0, le=36_500)] | None = None
    slots: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=SLOT_PATTERN)]],
        msgspec.Meta(max_length=MAX_SLOTS, description="Content slots to fill, e.g. home.hero, sidebar"),
    ] = msgspec.field(default_factory=list)


CandidateList = Annotated[list[Product], msgspec.Meta(max_length=MAX_CANDIDATES)]
_Profile = Annotated[dict[ProfileFieldName, Any], msgspec.Meta(max_length=100)]
_Limit = Annotated[int, msgspec.Meta(ge=1, le=MAX_CANDIDATES)]
_AssignmentKey = Annotated[str, msgspec.Meta(pattern=exact(r"^[A-Za-z0-9_-]{16,64}$"))]
_CandidatesDigest = Annotated[
    str,
    msgspec.Meta(
        pattern=DIGEST_PATTERN,
        description=(
            "SHA-256 (lowercase hex) of the exact bytes of ``candidates`` as sent. With ``candidates``: "
            "checked (422 if it is not theirs) and their table kept findable by it. Alone: the table "
            "held for it (409 candidates-unknown if none is held here: send the list with it again)."
        ),
    ),
]


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A profile already filtered by the gateway for ``purpose``, the visit's context, and optionally
    the products to rank (``candidates``; without them, the demo catalogue's for the context's
    department and category). ``assignment_key`` is the gateway's pseudonym of the shopper for A/B
    assignment (an HMAC of the subject id): it is hashed with the experiment key and never stored.
    ``candidates_digest`` names a candidate list by the SHA-256 of its JSON, so that a list this
    service holds need not be sent again (a digest of product lists: nothing personal)."""

    purpose: PurposeKey
    profile: _Profile
    context: DecisionContext = msgspec.field(default_factory=DecisionContext)
    candidates: CandidateList | None = None
    limit: _Limit | None = None
    assignment_key: _AssignmentKey | None = None
    candidates_digest: _CandidatesDigest | None = None

    def __post_init__(self) -> None:
        if self.candidates:
            check_candidate_ids(self.candidates)


def check_candidate_ids(candidates: list[Product]) -> None:
    """Every candidate's id to its pattern, all at once (``ValueError`` naming the first that is not)."""
    PRODUCT_IDS.check([product.id for product in candidates], "$.candidates[{}].id".format)


_NULL: Final = msgspec.Raw(b"null")


def _no_candidates() -> msgspec.Raw:
    return _NULL


class RawCandidatesDecisionRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """:class:`DecisionRequest` with ``candidates`` left as the JSON sent (``null`` when absent).

    For :mod:`services.rules.fast_decide`: the candidates' JSON is the key of their decoded table in
    :class:`~services.rules.selection.CandidateCache`, decoded (as :data:`CandidateList`) only when
    it is not there. Every other field is :class:`DecisionRequest`'s (a test holds them equal).
    """

    purpose: PurposeKey
    profile: _Profile
    context: DecisionContext = msgspec.field(default_factory=DecisionContext)
    candidates: msgspec.Raw = msgspec.field(default_factory=_no_candidates)
    limit: _Limit | None = None
    assignment_key: _AssignmentKey | None = None
    candidates_digest: _CandidatesDigest | None = None


class CandidatesOnly(msgspec.Struct):
    """Only the ``candidates`` of a decision body, as the JSON sent (``null`` when absent): the bytes
    its ``candidates_digest`` is checked against, once the route has decoded the whole body."""

    candidates: msgspec.Raw = msgspec.field(default_factory=_no_candidates)


class DecisionReason(msgspec.Struct):
    """Why a decision came out as it did: which definition (``rule:KEY@VERSION``, ``slot:...``), and what it did."""

    rule: str
    explanation: str


class Decision(msgspec.Struct, omit_defaults=True):
    """Segments matched, the variant per requested slot, the ranked product ids and the reasons;
    ``candidates_held`` only when the request named a ``candidates_digest``: whether the table for it
    is held here now (then the digest alone will do next time)."""

    purpose: str
    segments: list[str]
    variants: dict[str, str]
    products: list[str]
    reasons: list[DecisionReason]
    candidates_held: bool | None = None


class SegmentMatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Profiles already filtered by the gateway for ``purpose`` (an audience page)."""

    purpose: PurposeKey
    profiles: Annotated[
        list[Annotated[dict[ProfileFieldName, Any], msgspec.Meta(max_length=100)]], msgspec.Meta(max_length=5000)
    ]


class SegmentMatch(msgspec.Struct):
    """Positions (0-based) in the request's ``profiles`` of those the segment matches, ascending."""

    segment: str
    matches: list[int]


MAX_BATCH_DECISIONS: Final = 32


_DECISION_ITEM: Final = {
    "description": (
        "A POST /v1/decide body (DecisionRequest), as sent; any other JSON value is accepted here and "
        "answered null, for POST /v1/decide to answer on its own"
    )
}


class DecisionBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Up to :data:`MAX_BATCH_DECISIONS` decisions in one request: each item is a ``POST /v1/decide``
    body, kept as sent and decided as that endpoint decides it. Items are published as any JSON: one
    that is not a valid decision body is not refused here but answered ``null``."""

    decisions: Annotated[
        list[Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema=_DECISION_ITEM)]],
        msgspec.Meta(min_length=1, max_length=MAX_BATCH_DECISIONS),
    ]


class DecisionBatchAnswer(msgspec.Struct):
    """One result per decision, in order: the decision, or ``null`` for one this batch leaves to
    ``POST /v1/decide`` (a body that endpoint refuses, or a list named by a digest not held here):
    sent there alone, it gets its own answer or problem."""

    results: list[Decision | None]
