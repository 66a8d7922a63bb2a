"""Checks at save: shape, bounds, types, reachability and the release policy, each naming the place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.rules.definitions import DefinitionRejected, compile_definition
from services.rules.tests.support import POLICY, definition, leaf, rule, segment, slot


def rejected(body: dict[str, Any], segments: dict[str, list[str]] | None = None) -> DefinitionRejected:
    with pytest.raises(DefinitionRejected) as caught:
        compile_definition(definition(body), 1, POLICY, segments or {})
    return caught.value


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = leaf("context.visit_count", "gte", 1)
    for _ in range(depth - 1):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("when", "slug", "path"),
    [
        (leaf("profile.shoe_colour", "eq", "red"), "unknown-field", "when.field"),
        (leaf("context.weather", "eq", "rain"), "unknown-field", "when.field"),
        (
            {"all": [leaf("context.visit_count", "gte", 1), leaf("profile.shoe_size", "gte", "big")]},
            "type-error",
            "when.all[1].value",
        ),
        (leaf("profile.favourite_brands", "gt", 3), "type-error", "when.op"),
        (leaf("profile.sizes", "eq", "M"), "invalid-condition", "when.field"),
        (leaf("profile.style", "eq", "grunge"), "unreachable", "when.value"),
        (leaf("profile.shoe_size", "in", []), "unreachable", "when.value"),
        (leaf("profile.shoe_size", "between", [44, 38]), "unreachable", "when.value"),
        (
            {"all": [leaf("profile.shoe_size", "gte", 50), leaf("profile.shoe_size", "lt", 10)]},
            "unreachable",
            "when.all[1]",
        ),
        (
            {"all": [leaf("profile.style", "eq", "minimal"), leaf("profile.style", "eq", "street")]},
            "unreachable",
            "when.all[1]",
        ),
        ({"segment": "nobody"}, "unknown-segment", "when.segment"),
        (nested(7), "condition-too-deep", "when" + ".not" * 6),
        (
            {"field": "context.visit_count", "op": "eq", "value": 1, "all": [leaf("context.visit_count", "eq", 1)]},
            "invalid-condition",
            "when",
        ),
    ],
)
def test_a_bad_condition_is_refused_naming_its_place(when: dict[str, Any], slug: str, path: str) -> None:
    problem = rejected(segment("s", when))
    assert (problem.slug, problem.path) == (slug, path), problem.detail


def test_too_many_nodes_are_refused() -> None:
    wide = {
        "any": [{"all": [leaf("context.visit_count", "eq", n), leaf("context.page", "eq", "home")]} for n in range(40)]
    }
    assert rejected(segment("s", wide)).slug == "condition-too-large"


def test_a_field_the_purpose_may_not_use_is_refused_naming_field_and_policy_line() -> None:
    problem = rejected(
        segment(
            "s", {"all": [leaf("context.visit_count", "gte", 1), leaf("profile.email", "ends_with", "@example.com")]}
        )
    )
    assert problem.slug == "field-not-permitted"
    assert problem.path == "when.all[1].field"
    assert "'email' (user.contact.email)" in problem.detail
    source = Path(POLICY.origins["purposes.personalize.content.profiled"]).read_text(encoding="utf-8")
    number = next(i for i, text in enumerate(source.splitlines(), 1) if "may_use: [user.demographic.profile" in text)
    assert f"policies/release.yaml:{number} purposes.personalize.content.profiled.may_use" in problem.detail


def test_rules_and_slots_are_checked_too() -> None:
    assert rejected(rule("r", "filter")).path == "match"
    assert rejected(rule("r", "limit", limit=5, match=leaf("product.on_sale", "eq", True))).path == "match"
    wrong = rule("r", "boost", match=leaf("product.colour", "eq", "red"))
    assert (rejected(wrong).slug, rejected(wrong).path) == ("unknown-field", "match.field")
    withheld = rule("r", "boost", match=leaf("product.brand", "in", value_from="profile.phone"))
    assert rejected(withheld).slug == "field-not-permitted"
    assert rejected(rule("r", "filter", match=leaf("profile.style", "eq", "street"))).path == "match.field"
    assert rejected(rule("r", "boost", match={"segment": "s"}), {"s": []}).path == "match"
    assert (
        rejected(rule("r", "exclude", exclude={"attribute": "brand", "values": ["Gucci", "Gucci"]})).path
        == "exclude.values"
    )
    bad_slot = slot("home.hero", "a", variants=[{"key": "b", "when": {"segment": "gone"}}])
    assert (rejected(bad_slot).slug, rejected(bad_slot).path) == ("unknown-segment", "variants[0].when.segment")
    holdout = slot("home.hero", "a", experiment={"key": "x", "arms": {"holdout": 1}})
    assert rejected(holdout).path == "experiment"


def test_segments_may_not_refer_to_themselves_in_a_cycle() -> None:
    assert rejected(segment("a", {"segment": "b"}), {"b": ["a"]}).slug == "segment-cycle"
    assert rejected(segment("a", {"segment": "a"}), {"a": []}).slug == "unknown-segment"
