"""Merchandising rules applied to a candidate product list, in a defined order, with reasons.

The order is fixed, whatever order the rules were saved in:

1. **filter** — hide what a rule's ``match`` selects (e.g. full-price items for a sale seeker);
2. **boost / bury** — each product's score is the sum of the weights of the boost rules that select
   it minus those of the bury rules; a stable sort by score keeps the caller's order among equals;
3. **exclude** — of values kept apart (``Gucci`` and ``Armani``), the first one in the ranked list
   wins and products with the others are removed (kept apart = never in the same list);
4. **pin** — pinned products that survived the steps above move to their position (a filter wins
   over a pin: a hidden product is never brought back);
5. **limit** — the smallest limit of any applying rule and of the request.

Within a step, rules run by ``priority`` (higher first), then key. A rule applies only when its
``when`` is *true* for the visit (unknown is not true). Each rule that changed the list adds a
reason naming the rule, its version, what it did and why it applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from services.rules.catalogue import Product
from services.rules.conditions import Env
from services.rules.definitions import CompiledRule
from services.rules.schemas import DecisionReason

__all__ = ["STAGES", "apply_rules"]

STAGES: Final = ("filter", "boost", "exclude", "pin", "limit")
_STAGE_OF: Final = {"filter": 0, "boost": 1, "bury": 1, "exclude": 2, "pin": 3, "limit": 4}


def _order(rule: CompiledRule) -> tuple[int, int, str]:
    return (_STAGE_OF[rule.definition.action], -rule.definition.priority, rule.key)


def _name(rule: CompiledRule) -> str:
    return f"rule:{rule.key}@{rule.version}"


def _why(rule: CompiledRule) -> str:
    return rule.why


def apply_rules(
    candidates: Sequence[Product], rules: Sequence[CompiledRule], env: Env, limit: int | None
) -> tuple[list[Product], list[DecisionReason]]:
    """The candidates after every applying rule, and the reasons; ``env`` is the visit's."""
    products = list(candidates)
    reasons: list[DecisionReason] = []
    applying = sorted((rule for rule in rules if rule.when is None or rule.when(env) is True), key=_order)
    scores: dict[str, int] = {}
    limits: list[tuple[int, str]] = []
    ranked = False

    def selected(rule: CompiledRule) -> list[bool]:
        """Whether the rule's match holds, product by product (a tight loop: 200 products x 30 rules)."""
        match = rule.match
        if match is None:
            return [False] * len(products)
        marks = []
        for product in products:
            env.product = product
            marks.append(match(env) is True)
        return marks

    for rule in applying:
        definition = rule.definition
        action = definition.action
        if action not in ("boost", "bury") and scores and not ranked:
            products = _ranked(products, scores)
            ranked = True
        if action == "filter":
            kept = [product for product, hit in zip(products, selected(rule), strict=True) if not hit]
            if len(kept) != len(products):
                reasons.append(
                    DecisionReason(
                        _name(rule), f"hid {len(products) - len(kept)} products: {definition.title}{_why(rule)}"
                    )
                )
            products = kept
        elif action in ("boost", "bury"):
            sign = 1 if action == "boost" else -1
            moved = 0
            for product, hit in zip(products, selected(rule), strict=True):
                if hit:
                    scores[product.id] = scores.get(product.id, 0) + sign * definition.weight
                    moved += 1
            if moved:
                direction = "up" if sign > 0 else "down"
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"moved {moved} products {direction} by {definition.weight}: {definition.title}{_why(rule)}",
                    )
                )
        elif action == "exclude" and definition.exclude is not None:
            products, removed, winner = _exclude(products, definition.exclude.attribute, definition.exclude.values)
            if removed:
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"removed {removed} products so that {winner} is not shown beside "
                        f"{', '.join(v for v in definition.exclude.values if v != winner)}: {definition.title}",
                    )
                )
        elif action == "pin" and definition.pin:
            products, pinned = _pin(products, definition.pin, definition.position)
            if pinned:
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"pinned {', '.join(pinned)} at position {definition.position}: {definition.title}{_why(rule)}",
                    )
                )
        elif action == "limit" and definition.limit is not None:
            limits.append((definition.limit, _name(rule)))
    if scores and not ranked:
        products = _ranked(products, scores)
    if limit is not None:
        limits.append((limit, "request"))
    if limits:
        smallest, source = min(limits)
        if len(products) > smallest:
            if source != "request":
                reasons.append(DecisionReason(source, f"kept the first {smallest} of {len(products)} products"))
            products = products[:smallest]
    env.product = None
    return products, reasons


def _ranked(products: list[Product], scores: dict[str, int]) -> list[Product]:
    return sorted(products, key=lambda product: -scores.get(product.id, 0))


def _exclude(products: list[Product], attribute: str, values: Sequence[str]) -> tuple[list[Product], int, str]:
    apart = set(values)
    winner: str | None = None
    kept: list[Product] = []
    for product in products:
        value = getattr(product, attribute)
        if value in apart:
            if winner is None:
                winner = value
            elif value != winner:
                continue
        kept.append(product)
    return kept, len(products) - len(kept), winner or ""


def _pin(products: list[Product], pins: Sequence[str], position: int) -> tuple[list[Product], list[str]]:
    by_id = {product.id: product for product in products}
    pinned = [pin for pin in dict.fromkeys(pins) if pin in by_id]
    if not pinned:
        return products, []
    rest = [product for product in products if product.id not in set(pinned)]
    at = min(position - 1, len(rest))
    return [*rest[:at], *(by_id[pin] for pin in pinned), *rest[at:]], pinned
