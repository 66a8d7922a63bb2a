"""Decisions: segments, a variant per slot, products after the merchandising rules, and the reasons."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.rules.schemas import DecisionRequest
from services.rules.tests.support import CATALOGUE, PROFILED, Rules, leaf, rule, segment, slot

pytestmark = pytest.mark.anyio


def product(id: str, brand: str, price: float = 500, on_sale: bool = False, category: str = "jeans") -> dict[str, Any]:
    return {"id": id, "brand": brand, "category": category, "department": "womens", "price": price, "on_sale": on_sale}


SALE_SEEKER = segment("sale-seeker", leaf("profile.price_sensitivity", "eq", "high"))
CANDIDATES = [
    product("a", "Arket"),
    product("b", "Gucci", 4000),
    product("c", "Hope", 300, on_sale=True),
    product("d", "Armani", 2000, on_sale=True),
    product("e", "Acne Studios", 1500),
    product("f", "Acne Studios", 900, on_sale=True),
]


async def test_a_decision_names_the_matched_segments_and_nothing_else_without_definitions(rules: Rules) -> None:
    await rules.save(
        segment("dress-lovers", leaf("profile.favourite_categories", "contains", "dresses")),
        segment("runners", leaf("profile.favourite_categories", "contains", "running")),
    )
    context = {"page": "home", "visit_count": 3, "slots": ["hero"]}
    matched = await rules.decide({"favourite_categories": ["dresses", "knitwear"]}, context=context, candidates=[])
    assert msgspec.to_builtins(matched) == {
        "purpose": PROFILED,
        "segments": ["dress-lovers"],
        "variants": {},
        "products": [],
        "reasons": [],
    }
    # A field the gateway withheld is simply absent: no segment can match on it.
    assert (await rules.decide({})).segments == []
    other = await rules.decide({"favourite_categories": ["dresses"]}, purpose="marketing.communications.email")
    assert other.segments == []


async def test_rules_apply_in_their_defined_order_with_reasons(rules: Rules) -> None:
    await rules.save(
        SALE_SEEKER,
        rule("sale-only", "filter", when={"segment": "sale-seeker"}, match=leaf("product.on_sale", "eq", False)),
        rule("limit", "limit", limit=3),
        rule("pin-hope", "pin", pin=["c", "zzz"], position=3),
        rule("apart", "exclude", exclude={"attribute": "brand", "values": ["Gucci", "Armani"]}),
        rule("bury-armani", "bury", weight=1, match=leaf("product.brand", "eq", "Armani")),
        rule("favourites", "boost", weight=5, match=leaf("product.brand", "in", value_from="profile.favourite_brands")),
    )
    fan = {"favourite_brands": ["Acne Studios"]}
    decision = await rules.decide(fan, candidates=CANDIDATES)
    # favourites up (e, f), Armani buried below the rest, Gucci first of the pair so Armani goes,
    # Hope pinned at position 3, then three kept.
    assert decision.products == ["e", "f", "c"]
    assert [reason.rule for reason in decision.reasons] == [
        "rule:bury-armani@1",  # boost and bury are one step: by priority, then key
        "rule:favourites@1",
        "rule:apart@1",
        "rule:pin-hope@1",
        "rule:limit@1",
    ]
    assert "Gucci is not shown beside Armani" in decision.reasons[2].explanation

    seeker = await rules.decide({**fan, "price_sensitivity": "high"}, candidates=CANDIDATES, limit=10)
    assert seeker.segments == ["sale-seeker"]
    assert seeker.products == ["f", "d", "c"]  # full price hidden; no Gucci left, so Armani stays
    assert seeker.reasons[0].rule == "rule:sale-only@1"
    assert "hid 3 products" in seeker.reasons[0].explanation

    # Withdrawn consent: the gateway sends no price_sensitivity, so the filter does not apply.
    withheld = await rules.decide({}, candidates=CANDIDATES, limit=10)
    assert withheld.segments == []
    assert "a" in withheld.products


async def test_without_candidates_the_demo_catalogue_is_ranked(rules: Rules) -> None:
    decision = await rules.decide({}, context={"department": "kids"})
    assert len(decision.products) == 24
    assert all(CATALOGUE.by_id[product].department == "kids" for product in decision.products)


async def test_slots_choose_by_segment_then_experiment_then_default(rules: Rules) -> None:
    await rules.save(
        segment("first-visit", leaf("context.visit_count", "lte", 1)),
        slot(
            "home.hero",
            "editorial",
            variants=[{"key": "welcome", "when": {"segment": "first-visit"}}],
            experiment={"key": "hero-test", "holdout_percent": 20, "arms": {"editorial": 1, "bold": 1}},
        ),
    )
    first = await rules.decide({}, context={"visit_count": 1, "slots": ["home.hero", "nowhere"]})
    assert first.variants == {"home.hero": "welcome"}
    without_key = await rules.decide({}, context={"visit_count": 5, "slots": ["home.hero"]})
    assert without_key.variants == {"home.hero": "editorial"}

    arms: dict[str, int] = {}
    for number in range(2000):
        key = f"{number:032x}"
        chosen = await rules.decide({}, context={"visit_count": 5, "slots": ["home.hero"]}, assignment_key=key)
        again = await rules.decide({}, context={"visit_count": 7, "slots": ["home.hero"]}, assignment_key=key)
        assert chosen.variants == again.variants  # stable per shopper
        where = chosen.reasons[0].explanation
        arm = "holdout" if "(holdout)" in where else chosen.variants["home.hero"]
        arms[arm] = arms.get(arm, 0) + 1
    assert set(arms) == {"holdout", "editorial", "bold"}
    assert 300 < arms["holdout"] < 500  # 20 %
    assert abs(arms["editorial"] - arms["bold"]) < 200

    await rules.exposures.flush(rules.database)
    from services.rules.repository import ExposureRepository

    async with rules.database.sessionmaker() as session:
        counted = {row.arm: row.count for row in await ExposureRepository(session).for_experiment("hero-test")}
    assert counted == {arm: 2 * count for arm, count in arms.items()}


@pytest.mark.parametrize(
    "request_body",
    [
        {"context": {"slots": ["x"] * 11}},
        {"context": {"visit_count": -1}},
        {"context": {"page": "Not A Page"}},
        {"context": {"unknown": 1}},
        {"context": {"days_since_last_visit": 40_000}},
        {"candidates": [{"id": "a", "brand": "b", "category": "c", "department": "d", "price": 1}] * 501},
        {"candidates": [{"id": "a", "brand": "b"}]},
        {"limit": 0},
        {"assignment_key": "shopper-lars"},
    ],
)
def test_the_request_is_small_and_bounded(request_body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"purpose": PROFILED, "profile": {}, **request_body}, DecisionRequest, strict=True)
