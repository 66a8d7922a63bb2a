"""What the rules service's API accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from tillit.types import ProfileFieldName, PurposeKey

__all__ = [
    "CONTEXT_ID_PATTERN",
    "MAX_SLOTS",
    "NAME_PATTERN",
    "Condition",
    "Decision",
    "DecisionContext",
    "DecisionReason",
    "DecisionRequest",
    "Evaluation",
    "EvaluationRequest",
    "SegmentIn",
    "SegmentMatch",
    "SegmentMatchRequest",
    "SegmentOut",
]

NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
CONTEXT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_SLOTS = 10

Scalar = Annotated[str, msgspec.Meta(max_length=200)] | int | float | bool


class Condition(msgspec.Struct, forbid_unknown_fields=True):
    """``field op value``; a field absent from the profile never matches."""

    field: ProfileFieldName
    op: Literal["eq", "ne", "in", "contains", "gte", "lte"]
    value: Scalar | Annotated[list[Scalar], msgspec.Meta(max_length=50)]


class SegmentIn(msgspec.Struct, forbid_unknown_fields=True):
    key: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    purpose: PurposeKey
    conditions: Annotated[list[Condition], msgspec.Meta(min_length=1, max_length=20)]


class SegmentOut(msgspec.Struct):
    key: str
    title: str
    purpose: str
    conditions: list[Condition]
    created_at: datetime


class EvaluationRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A profile already filtered by the gateway for ``purpose``."""

    purpose: PurposeKey
    profile: Annotated[dict[ProfileFieldName, Any], msgspec.Meta(max_length=100)]


class Evaluation(msgspec.Struct):
    purpose: str
    segments: list[str]


class DecisionContext(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The visit a decision is for: a small, bounded set that segments and rules may read."""

    page: Annotated[str, msgspec.Meta(pattern=NAME_PATTERN, description="Page type, e.g. home, product")] | None = None
    product_id: Annotated[str, msgspec.Meta(pattern=CONTEXT_ID_PATTERN, description="Product on screen")] | None = None
    visit_count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    days_since_last_visit: Annotated[int, msgspec.Meta(ge=0, le=36_500)] | None = None
    slots: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]],
        msgspec.Meta(max_length=MAX_SLOTS, description="Content slots to fill, e.g. hero, sidebar"),
    ] = msgspec.field(default_factory=list)


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A profile already filtered by the gateway for ``purpose``, and the visit's context."""

    purpose: PurposeKey
    profile: Annotated[dict[ProfileFieldName, Any], msgspec.Meta(max_length=100)]
    context: DecisionContext = msgspec.field(default_factory=DecisionContext)


class DecisionReason(msgspec.Struct):
    """Why a decision came out as it did: which rule, and what it saw."""

    rule: str
    explanation: str


class Decision(msgspec.Struct):
    """Segments the profile falls into; variants per slot, products and reasons once rules exist."""

    purpose: str
    segments: list[str]
    variants: dict[str, str]
    products: list[str]
    reasons: list[DecisionReason]


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
