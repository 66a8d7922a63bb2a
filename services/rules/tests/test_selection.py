"""Product matches over a whole candidate list answer what the per-product evaluator answers."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from services.rules.catalogue import Product, demo_catalogue
from services.rules.conditions import Condition, ConditionProblem, Env, Tri, compile_condition
from services.rules.definitions import DefinitionRejected, _field_types
from services.rules.engine import Engine
from services.rules.exposures import ExposureCounter
from services.rules.models import Definition as DefinitionRow
from services.rules.schemas import DecisionRequest, RawCandidatesDecisionRequest
from services.rules.selection import CandidateCache, Candidates, compile_selector
from services.rules.tests.support import POLICY, PROFILED, leaf, rule

BRANDS = ("Gucci", "Armani", "Hope", "Arket", "ganni")
TAGS = ("new", "slim", "organic", "limited")
LEAVES: list[dict[str, Any]] = [
    leaf("product.brand", "eq", "Gucci"),
    leaf("product.brand", "ne", "Hope"),
    leaf("product.brand", "in", ["Gucci", "Arket"]),
    leaf("product.brand", "not_in", ["Armani"]),
    leaf("product.brand", "contains", "a"),
    leaf("product.brand", "starts_with", "G"),
    leaf("product.brand", "ends_with", "i"),
    leaf("product.id", "in", ["p1", "p3"]),
    leaf("product.category", "eq", "jeans"),
    leaf("product.department", "ne", "kids"),
    leaf("product.on_sale", "eq", True),
    leaf("product.on_sale", "ne", True),
    leaf("product.price", "eq", 500),
    leaf("product.price", "lt", 700),
    leaf("product.price", "gte", 900.5),
    leaf("product.price", "between", [300, 1200]),
    leaf("product.price", "in", [500, 1200.0]),
    leaf("product.price", "not_in", [500]),
    leaf("product.tags", "contains", "new"),
    leaf("product.tags", "contains_any", ["slim", "organic"]),
    leaf("product.tags", "contains_all", ["slim", "new"]),
    {"field": "product.brand", "op": "in", "value_from": "profile.favourite_brands"},
    {"field": "product.brand", "op": "not_in", "value_from": "profile.favourite_brands"},
    {"field": "product.category", "op": "eq", "value_from": "profile.clothing_size"},
    {"field": "product.brand", "op": "contains", "value_from": "context.product_brand"},
    {"field": "product.brand", "op": "starts_with", "value_from": "context.product_brand"},
    {"field": "product.price", "op": "gt", "value_from": "profile.sizes.shoes"},
    {"field": "product.price", "op": "lte", "value_from": "context.visit_count"},
    {"field": "product.tags", "op": "in", "value_from": "profile.favourite_categories"},
    {"field": "product.tags", "op": "contains", "value_from": "profile.clothing_size"},
    {"field": "product.on_sale", "op": "eq", "value_from": "profile.clothing_size"},
]


def _tree(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth >= 3 or roll < 0.4:
        return rng.choice(LEAVES)
    if roll < 0.6:
        return {"not": _tree(rng, depth + 1)}
    joiner = "all" if roll < 0.8 else "any"
    return {joiner: [_tree(rng, depth + 1) for _ in range(rng.randrange(1, 4))]}


def _products(rng: random.Random) -> list[Product]:
    return [
        Product(
            id=rng.choice(("p1", "p2", "p3", f"q{number}")),
            brand=rng.choice(BRANDS),
            category=rng.choice(("jeans", "tops", "M")),
            department=rng.choice(("kids", "womens")),
            price=rng.choice((300.0, 500.0, 900.5, 1200.0, 2500.0)),
            on_sale=rng.random() < 0.4,
            tags=rng.sample(TAGS, rng.randrange(0, 3)),
        )
        for number in range(rng.randrange(0, 12))
    ]


def _visit(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    profile: dict[str, Any] = {}
    if rng.random() < 0.7:
        profile["favourite_brands"] = rng.choice([["Gucci", "Hope"], [], ["Arket", 3, None, ["x"]], "Gucci"])
    if rng.random() < 0.7:
        profile["clothing_size"] = rng.choice(["M", "jeans", "new"])
    if rng.random() < 0.5:
        profile["favourite_categories"] = ["jeans", "new"]
    if rng.random() < 0.5:
        profile["sizes"] = rng.choice([{"shoes": 42}, {"shoes": "42"}, {}])
    context: dict[str, Any] = {}
    if rng.random() < 0.6:
        context["product_brand"] = rng.choice(["Gucci", "cc", "G"])
    if rng.random() < 0.6:
        context["visit_count"] = rng.choice([0, 600, 5000])
    return profile, context


def test_a_selector_answers_what_the_per_product_evaluator_answers() -> None:
    rng = random.Random(20261124)  # noqa: S311 - reproducible test data
    field_type = _field_types(POLICY, PROFILED)
    compared = 0
    for _ in range(400):
        condition = msgspec.convert(_tree(rng), Condition)
        try:
            evaluate = compile_condition(condition, "match", scope="product", field_type=field_type)
        except ConditionProblem:
            continue  # e.g. contradicting leaves in one all: refused at save, never run
        select = compile_selector(condition)
        for _ in range(5):
            products = _products(rng)
            profile, context = _visit(rng)
            true, unknown = select(Env(profile, context), Candidates(products))
            expected: list[Tri] = [evaluate(Env(profile, context, product=product)) for product in products]
            got: list[Tri] = [True if at in true else None if at in unknown else False for at in range(len(products))]
            assert got == expected, (msgspec.json.encode(condition), profile, context, products)
            compared += len(products)
    assert compared > 5_000


def test_a_withheld_value_from_is_unknown_for_every_product() -> None:
    condition = msgspec.convert(LEAVES[21], Condition)  # product.brand in profile.favourite_brands
    products = [Product(id=f"p{n}", brand=b, category="c", department="d", price=1) for n, b in enumerate(BRANDS)]
    selection = compile_selector(condition)(Env({}, {}), Candidates(products))
    assert not selection.true
    assert set(selection.unknown) == set(range(len(products)))
    negated = compile_selector(msgspec.convert({"not": LEAVES[21]}, Condition))(Env({}, {}), Candidates(products))
    assert not negated.true  # not(unknown) is unknown: a withheld field never selects


def _engine(*bodies: dict[str, Any]) -> Engine:
    now = datetime.now(UTC)
    rows = [
        DefinitionRow(
            id=number,
            kind=body["kind"],
            key=body["key"],
            version=1,
            purpose=body["purpose"],
            title=body["title"],
            body=body,
            status="active",
            created_at=now,
            changed_at=now,
        )
        for number, body in enumerate(bodies)
    ]
    engine = Engine(demo_catalogue(), ExposureCounter())
    engine.install(1, POLICY, rows)
    return engine


def _product(product_id: str, brand: str) -> dict[str, Any]:
    return {"id": product_id, "brand": brand, "category": "jeans", "department": "womens", "price": 100.0}


@pytest.mark.parametrize("hope_too", [False, True])
def test_candidates_that_share_an_id_share_its_score(hope_too: bool) -> None:
    engine = _engine(rule("hope-up", "boost", weight=5, match=leaf("product.brand", "eq", "Hope")))
    candidates = [_product("a", "Arket"), _product("b", "Arket"), _product("a", "Hope" if hope_too else "Arket")]
    candidates.append(_product("c", "Hope"))
    request = msgspec.convert({"purpose": PROFILED, "profile": {}, "candidates": candidates}, DecisionRequest)
    decision = engine.decide(request)
    # Both "a" products rank with the id's score (5, or 10 when both are Hope), the caller's order among equals.
    assert decision.products == (["a", "a", "c", "b"] if hope_too else ["c", "a", "b", "a"])
    assert decision.reasons[0].explanation.startswith(f"moved {2 if hope_too else 1} products up by 5")


def _random_rules(rng: random.Random) -> list[dict[str, Any]]:
    """Filters, boosts and buries on random product matches (some reading the visit), an exclusion and a pin."""
    bodies = []
    for number in range(rng.randrange(2, 8)):
        action = rng.choice(("filter", "boost", "bury", "boost"))
        extra = {"weight": rng.randrange(1, 6)} if action != "filter" else {}
        bodies.append(rule(f"r{number}", action, match=_tree(rng), priority=rng.randrange(3), **extra))
    bodies.append(rule("apart", "exclude", exclude={"attribute": "brand", "values": ["Gucci", "Armani"]}))
    bodies.append(rule("pin", "pin", pin=["p3", "p1"], position=rng.randrange(1, 4)))
    return bodies


def test_a_candidates_table_reused_across_visits_decides_as_a_fresh_one() -> None:
    """Product-only matches are memoized in a table (and tables kept across decisions): a table used for
    many visits must answer each as one built for that visit alone."""
    rng = random.Random(20261125)  # noqa: S311 - reproducible test data
    compared = memoized = 0
    for _ in range(60):
        try:
            engine = _engine(*_random_rules(rng))
        except DefinitionRejected:
            continue
        lists = [msgspec.json.encode([msgspec.to_builtins(p) for p in _products(rng)]) for _ in range(3)]
        for _ in range(12):
            profile, context = _visit(rng)
            body = {"purpose": PROFILED, "profile": profile, "context": context, "candidates": rng.choice(lists)}
            if rng.random() < 0.5:
                body["limit"] = rng.randrange(1, 9)
            encoded = msgspec.json.encode({**body, "candidates": msgspec.Raw(body["candidates"])})
            fresh = engine.decide(msgspec.json.decode(encoded, type=DecisionRequest))
            request = msgspec.json.decode(encoded, type=RawCandidatesDecisionRequest)
            reused = engine.decide_on(request, engine.candidate_table(request.candidates))
            assert reused == fresh, body
            compared += 1
        memoized += sum(len(table.memo) for table in engine.candidate_tables._tables.values())
    assert compared > 300
    assert memoized > 50


def _merchandising(rng: random.Random) -> list[dict[str, Any]]:
    """Rules of every action, in random priorities, with exclusions, pins and limits that may overlap."""
    bodies = _random_rules(rng)[:-2]
    for number in range(rng.randrange(0, 3)):
        attribute, values = rng.choice([("brand", ["Gucci", "Armani"]), ("brand", ["Hope", "Arket", "Gucci"])])
        if rng.random() < 0.3:
            attribute, values = "category", ["jeans", "tops"]
        bodies.append(
            rule(
                f"apart{number}",
                "exclude",
                priority=rng.randrange(3),
                exclude={"attribute": attribute, "values": values},
            )
        )
    for number in range(rng.randrange(0, 3)):
        pins = rng.sample(["p1", "p2", "p3", "q0", "q5", "zz"], rng.randrange(1, 4))
        bodies.append(rule(f"pin{number}", "pin", priority=rng.randrange(3), pin=pins, position=rng.randrange(1, 6)))
    if rng.random() < 0.4:
        bodies.append(rule("page", "limit", limit=rng.randrange(1, 12)))
    return bodies


def _reference(
    bodies: list[dict[str, Any]], products: list[Product], profile: dict[str, Any], context: dict[str, Any]
) -> list[str]:
    """The product ids the merchandising steps give, as :mod:`services.rules.merchandising` documents
    them, product by product with the per-product evaluator (no table, no bitsets)."""
    field_type = _field_types(POLICY, PROFILED)
    stage = {"filter": 0, "boost": 1, "bury": 1, "exclude": 2, "pin": 3, "limit": 4}
    ordered = sorted(bodies, key=lambda body: (stage[body["action"]], -body.get("priority", 0), body["key"]))

    matches = {
        body["key"]: compile_condition(
            msgspec.convert(body["match"], Condition), "match", scope="product", field_type=field_type
        )
        for body in bodies
        if "match" in body
    }

    def selects(body: dict[str, Any], product: Product) -> bool:
        return matches[body["key"]](Env(profile, context, product=product)) is True

    shown = list(products)
    scores: dict[str, int] = {}
    limits = []
    last_score = max((n for n, body in enumerate(ordered) if stage[body["action"]] == 1), default=-1)
    for number, body in enumerate(ordered):
        action = body["action"]
        if action == "filter":
            shown = [product for product in shown if not selects(body, product)]
        elif action in ("boost", "bury"):
            for product in shown:
                if selects(body, product):
                    scores[product.id] = scores.get(product.id, 0) + body["weight"] * (1 if action == "boost" else -1)
        elif action == "exclude":
            attribute, values = body["exclude"]["attribute"], body["exclude"]["values"]
            winner = next((getattr(p, attribute) for p in shown if getattr(p, attribute) in values), None)
            shown = [p for p in shown if winner is None or getattr(p, attribute) not in set(values) - {winner}]
        elif action == "pin":
            last = {product.id: product for product in shown}
            pinned = [pin for pin in dict.fromkeys(body["pin"]) if pin in last]
            rest = [product for product in shown if product.id not in pinned]
            at = min(body["position"] - 1, len(rest))
            shown = [*rest[:at], *(last[pin] for pin in pinned), *rest[at:]]
        else:
            limits.append(body["limit"])
        if number == last_score:  # once, when every boost and bury is added up: the list's order among equals
            shown = sorted(shown, key=lambda product: -scores.get(product.id, 0))
    return [product.id for product in shown[: min(limits, default=len(shown))]]


def test_decisions_rank_as_the_merchandising_steps_do_product_by_product() -> None:
    """The bitset ranking (and its memoized selections and counters, tables reused across visits)
    answers what the documented steps answer when applied product by product."""
    rng = random.Random(20261126)  # noqa: S311 - reproducible test data
    compared = 0
    for _ in range(80):
        bodies = _merchandising(rng)
        try:
            engine = _engine(*bodies)
        except DefinitionRejected:
            continue
        lists = [_products(rng) + _products(rng) + _products(rng) for _ in range(3)]
        encoded = [msgspec.json.encode([msgspec.to_builtins(p) for p in products]) for products in lists]
        for _ in range(10):
            profile, context = _visit(rng)
            chosen = rng.randrange(len(lists))
            body = {"purpose": PROFILED, "profile": profile, "context": context}
            request = msgspec.json.decode(
                msgspec.json.encode({**body, "candidates": msgspec.Raw(encoded[chosen])}),
                type=RawCandidatesDecisionRequest,
            )
            decision = engine.decide_on(request, engine.candidate_table(request.candidates))
            assert decision.products == _reference(bodies, lists[chosen], profile, context), (bodies, body)
            compared += 1
    assert compared > 600


def test_the_candidate_cache_keeps_lists_seen_again_and_the_more_frequent_when_full() -> None:
    cache = CandidateCache(entries=2)
    table = Candidates([])
    assert cache.get(b"[1]") is None
    cache.put(b"[1]", table)
    assert len(cache) == 0  # seen once: not kept
    cache.put(b"[1]", table)
    assert cache.get(b"[1]") is table
    for key in (b"[2]", b"[2]", b"[3]", b"[3]"):
        if cache.get(key) is None:
            cache.put(key, Candidates([]))
    assert len(cache) == 2
    assert cache.get(b"[1]") is table  # seen three times: not replaced by [3], seen twice
    assert cache.get(b"[3]") is None
    for _ in range(3):
        if cache.get(b"[3]") is None:
            cache.put(b"[3]", Candidates([]))
    assert cache.get(b"[3]") is not None  # now seen more often than [2], the least recently used
    assert cache.get(b"[2]") is None
    cache.clear()
    assert len(cache) == 0


def test_tables_kept_by_digest_count_the_bytes_of_their_lists() -> None:
    cache = CandidateCache(key_bytes=4000)
    first, second = "a" * 64, "b" * 64
    assert cache.put(first, Candidates([]), 900) is True  # by its digest: kept at once while there is room
    assert first in cache
    assert cache.put(first, Candidates([]), 900) is True  # already held
    assert cache.put(first, Candidates([]), 900) is True
    assert [cache.put(second, Candidates([]), 1001) for _ in range(3)] == [False, False, False]  # > a quarter
    cache.put(second, Candidates([]), 1000)
    assert second in cache
    for key in (b"[1]" * 300, "c" * 64):  # 900 bytes, 1000 bytes: 3800 of 4000 held
        for _ in range(2):
            cache.put(key, Candidates([]), None if isinstance(key, bytes) else 1000)
    assert len(cache) == 4
    for _ in range(5):
        cache.put("d" * 64, Candidates([]), 1000)  # 4800 > 4000: the least recently used goes
    assert first not in cache
    assert "d" * 64 in cache
    assert len(cache) == 4
    # Full: a digest seen once is not kept (it would drop another table), as a list by its bytes.
    assert cache.put("e" * 64, Candidates([]), 200) is False  # 4100 > 4000
    assert "e" * 64 not in cache


def test_a_digest_is_kept_at_once_only_while_no_other_table_is_dropped() -> None:
    cache = CandidateCache(entries=2)
    assert cache.put("a" * 64, Candidates([]), 10) is True
    assert cache.put(b"[1]", Candidates([])) is False  # by its bytes: from the second sighting on
    assert cache.put("b" * 64, Candidates([]), 10) is True
    assert cache.put("c" * 64, Candidates([]), 10) is False  # full
    assert len(cache) == 2


def test_the_raw_candidates_request_is_the_decision_request_but_for_candidates() -> None:
    ours = {f.name: f for f in msgspec.structs.fields(RawCandidatesDecisionRequest)}
    theirs = {f.name: f for f in msgspec.structs.fields(DecisionRequest)}
    assert list(ours) == list(theirs)
    for name, field in theirs.items():
        if name != "candidates":
            assert ours[name] == field, name
    for setting in ("forbid_unknown_fields", "omit_defaults", "array_like", "tag", "tag_field"):
        assert getattr(RawCandidatesDecisionRequest.__struct_config__, setting) == getattr(
            DecisionRequest.__struct_config__, setting
        )
