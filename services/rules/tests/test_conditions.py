"""Condition trees: three-valued evaluation (a withheld field is unknown and never matches)."""

from __future__ import annotations

from typing import Any

import pytest

from services.rules.conditions import Env, Tri
from services.rules.definitions import CompiledSegment, compile_definition
from services.rules.tests.support import POLICY, definition, leaf, segment

JEANS = leaf("profile.favourite_categories", "contains", "jeans")
WOMENS = leaf("profile.department", "eq", "womens")


def evaluate(when: dict[str, Any], profile: dict[str, Any], context: dict[str, Any] | None = None) -> Tri:
    compiled = compile_definition(definition(segment("s", when)), 1, POLICY, {})
    assert isinstance(compiled, CompiledSegment)
    return compiled.when(Env(profile, context or {}))


@pytest.mark.parametrize(
    ("when", "profile", "expected"),
    [
        (JEANS, {"favourite_categories": ["jeans"]}, True),
        (JEANS, {"favourite_categories": ["dresses"]}, False),
        (JEANS, {}, None),
        ({"not": JEANS}, {}, None),  # not(unknown) is unknown: never a match
        ({"not": JEANS}, {"favourite_categories": ["dresses"]}, True),
        ({"all": [JEANS, WOMENS]}, {"favourite_categories": ["jeans"]}, None),
        ({"all": [JEANS, WOMENS]}, {"favourite_categories": ["dresses"]}, False),
        ({"any": [JEANS, WOMENS]}, {"department": "womens"}, True),
        ({"any": [JEANS, WOMENS]}, {"department": "mens"}, None),
        ({"not": {"any": [JEANS, WOMENS]}}, {"department": "mens"}, None),
        ({"not": {"all": [JEANS, WOMENS]}}, {"department": "mens"}, True),
        (leaf("profile.favourite_categories", "contains", "jeans"), {"favourite_categories": "jeans"}, True),
        (leaf("profile.favourite_categories", "contains_any", ["jeans", "coats"]), {"favourite_categories": []}, False),
        (leaf("profile.favourite_brands", "contains_all", ["Hope", "Arket"]), {"favourite_brands": ["Arket"]}, False),
        (leaf("profile.price_range.max", "lt", 500), {"price_range": {"max": 400, "currency": "SEK"}}, True),
        (leaf("profile.price_range.max", "lt", 500), {"price_range": {"currency": "SEK"}}, None),
        (leaf("profile.shoe_size", "between", [38, 40]), {"shoe_size": 39.5}, True),
        (leaf("profile.shoe_size", "gt", 40), {"shoe_size": "big"}, None),  # a surprising type is unknown
        (leaf("profile.style", "in", ["minimal", "classic"]), {"style": "street"}, False),
        (leaf("profile.style", "not_in", ["minimal", "classic"]), {"style": "street"}, True),
        (leaf("profile.style", "ne", "street"), {}, None),
    ],
)
def test_three_valued_logic(when: dict[str, Any], profile: dict[str, Any], expected: Tri) -> None:
    assert evaluate(when, profile) is expected


@pytest.mark.parametrize(
    ("when", "context", "expected"),
    [
        (leaf("context.visit_count", "lte", 1), {"visit_count": 1}, True),
        (leaf("context.visit_count", "lte", 1), {"visit_count": None}, None),
        (leaf("context.page", "starts_with", "prod"), {"page": "product"}, True),
        (leaf("context.product_brand", "ends_with", "Studios"), {"product_brand": "Acne Studios"}, True),
        (leaf("context.days_since_last_purchase", "gte", 90), {}, None),
    ],
)
def test_context_leaves(when: dict[str, Any], context: dict[str, Any], expected: Tri) -> None:
    assert evaluate(when, {}, context) is expected
