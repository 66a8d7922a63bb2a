"""Segment definitions, checked against the release policy when saved, and their evaluation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from services.rules.models import Segment
from services.rules.repository import SegmentRepository
from services.rules.schemas import (
    Condition,
    Decision,
    DecisionRequest,
    Evaluation,
    EvaluationRequest,
    SegmentIn,
    SegmentMatch,
    SegmentMatchRequest,
    SegmentOut,
)
from tillit.policy import Policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["SegmentService", "matches"]


def matches(condition: Condition, profile: dict[str, Any]) -> bool:
    """Whether one condition holds; a field the gateway withheld is unknown and never matches."""
    if condition.field not in profile:
        return False
    actual, expected = profile[condition.field], condition.value
    try:
        match condition.op:
            case "eq":
                return bool(actual == expected)
            case "ne":
                return bool(actual != expected)
            case "in":
                return isinstance(expected, list) and actual in expected
            case "contains":
                return isinstance(actual, list) and expected in actual
            case "gte":
                return bool(actual >= expected)
            case "lte":
                return bool(actual <= expected)
    except TypeError:
        return False
    return False


class SegmentService:
    def __init__(self, repository: SegmentRepository, policy: Policy, clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.policy = policy
        self.clock = clock

    def _check_against_policy(self, segment: SegmentIn) -> None:
        purpose = self.policy.purposes.get(segment.purpose)
        if purpose is None:
            raise Unprocessable(f"purpose {segment.purpose!r} is not declared in the policy", slug="unknown-purpose")
        for index, condition in enumerate(segment.conditions):
            field = self.policy.fields.get(condition.field)
            if field is None:
                raise Unprocessable(
                    f"conditions[{index}].field {condition.field!r} is not a field declared in the policy",
                    slug="unknown-field",
                )
            if field.category not in purpose.may_use:
                raise Unprocessable(
                    f"conditions[{index}] reads {condition.field!r} ({field.category}), which purpose "
                    f"{segment.purpose!r} may not use (policy purposes.{segment.purpose}.may_use)",
                    slug="field-not-permitted",
                )

    async def create(self, segment: SegmentIn) -> SegmentOut:
        self._check_against_policy(segment)
        if await self.repository.get(segment.key) is not None:
            raise Conflict(f"segment {segment.key!r} already exists", slug="segment-exists")
        row = Segment(
            key=segment.key,
            title=segment.title,
            purpose=segment.purpose,
            conditions=[msgspec.to_builtins(c) for c in segment.conditions],
            created_at=self.clock(),
        )
        await self.repository.add(row)
        return _out(row)

    async def list(self) -> list[SegmentOut]:
        return [_out(row) for row in await self.repository.for_purpose()]

    async def evaluate(self, request: EvaluationRequest) -> Evaluation:
        matched = [
            row.key
            for row in await self.repository.for_purpose(request.purpose)
            if all(matches(condition, request.profile) for condition in _conditions(row))
        ]
        return Evaluation(purpose=request.purpose, segments=matched)

    async def decide(self, request: DecisionRequest) -> Decision:
        """The decision for one visit. Until merchandising rules and variants exist, it is the
        matched segments and an otherwise empty, well-defined answer."""
        evaluation = await self.evaluate(EvaluationRequest(purpose=request.purpose, profile=request.profile))
        return Decision(purpose=request.purpose, segments=evaluation.segments, variants={}, products=[], reasons=[])

    async def match(self, key: str, request: SegmentMatchRequest) -> SegmentMatch:
        """Which of many filtered profiles one segment matches (the gateway's ``segment=`` audiences).

        A segment answers only for the purpose it was defined under: its conditions were checked
        against that purpose's permitted fields, and the profiles were filtered for the one asked.
        """
        row = await self.repository.get(key)
        if row is None:
            raise NotFound(f"no segment {key!r} is defined", slug="segment-not-found")
        if row.purpose != request.purpose:
            raise Unprocessable(
                f"segment {key!r} is defined for purpose {row.purpose!r}, not {request.purpose!r}",
                slug="segment-purpose-mismatch",
            )
        conditions = _conditions(row)
        matched = [
            index
            for index, profile in enumerate(request.profiles)
            if all(matches(condition, profile) for condition in conditions)
        ]
        return SegmentMatch(segment=key, matches=matched)


def _conditions(row: Segment) -> list[Condition]:
    return msgspec.convert(row.conditions, list[Condition])


def _out(row: Segment) -> SegmentOut:
    return SegmentOut(
        key=row.key,
        title=row.title,
        purpose=row.purpose,
        conditions=_conditions(row),
        created_at=as_utc(row.created_at),
    )
