"""What the rules service's API accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from tillit.types import ProfileFieldName, PurposeKey

__all__ = [
    "Condition",
    "Evaluation",
    "EvaluationRequest",
    "SegmentIn",
    "SegmentMatch",
    "SegmentMatchRequest",
    "SegmentOut",
]

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
