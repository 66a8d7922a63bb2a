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

The list is kept as positions in the candidates (each attribute is read once, into
:class:`~services.rules.selection.Candidates`), and a rule's match is evaluated for all candidates
at once (:mod:`services.rules.selection`): a match depends only on the product and the visit, so
where a product stands does not change it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from services.rules.catalogue import Product
from services.rules.conditions import Env
from services.rules.definitions import CompiledRule
from services.rules.schemas import DecisionReason
from services.rules.selection import Candidates

__all__ = ["STAGES", "apply_rules"]

STAGES: Final = ("filter", "boost", "exclude", "pin", "limit")
_STAGE_OF: Final = {"filter": 0, "boost": 1, "bury": 1, "exclude": 2, "pin": 3, "limit": 4}


def _order(rule: CompiledRule) -> tuple[int, int, str]:
    return (_STAGE_OF[rule.definition.action], -rule.definition.priority, rule.key)


def _name(rule: CompiledRule) -> str:
    return f"rule:{rule.key}@{rule.version}"


def apply_rules(
    candidates: Sequence[Product] | Candidates, rules: Sequence[CompiledRule], env: Env, limit: int | None
) -> tuple[list[Product], list[DecisionReason]]:
    """The candidates after every applying rule, and the reasons; ``env`` is the visit's.

    ``candidates`` may come as their table already (one reused across decisions, see
    :class:`~services.rules.selection.CandidateCache`).
    """
    table = candidates if isinstance(candidates, Candidates) else Candidates(candidates)
    products = table.products
    ids = table.column("id")
    shown = list(range(len(products)))
    """Positions in ``products`` of the list as it stands."""
    alive: set[int] = set(shown)
    """The same positions, as a set."""
    reasons: list[DecisionReason] = []
    applying = sorted((rule for rule in rules if rule.when is None or rule.when(env) is True), key=_order)
    scores = [0] * len(products)
    """Per position; the ranking adds up those of candidates that share an id."""
    scored = False
    limits: list[tuple[int, str]] = []
    ranked = False

    def selected(rule: CompiledRule) -> set[int]:
        """The shown positions whose product the rule's match is true for."""
        if rule.select is None:
            return set()
        return alive & rule.select(env, table).true

    for rule in applying:
        definition = rule.definition
        action = definition.action
        if action not in ("boost", "bury") and scored and not ranked:
            shown = _ranked(shown, ids, scores)
            ranked = True
        if action == "filter":
            hidden = selected(rule)
            if hidden:
                shown = [index for index in shown if index not in hidden]
                alive -= hidden
                reasons.append(DecisionReason(_name(rule), f"hid {len(hidden)} products: {definition.title}{rule.why}"))
        elif action in ("boost", "bury"):
            moved = selected(rule)
            step = definition.weight if action == "boost" else -definition.weight
            for index in moved:
                scores[index] += step
            if moved:
                scored = True
                direction = "up" if step > 0 else "down"
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"moved {len(moved)} products {direction} by {definition.weight}: {definition.title}{rule.why}",
                    )
                )
        elif action == "exclude" and definition.exclude is not None:
            values = definition.exclude.values
            shown, removed, winner = _exclude(shown, table, definition.exclude.attribute, values)
            if removed:
                alive = set(shown)
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"removed {removed} products so that {winner} is not shown beside "
                        f"{', '.join(v for v in values if v != winner)}: {definition.title}",
                    )
                )
        elif action == "pin" and definition.pin:
            shown, pinned = _pin(shown, ids, definition.pin, definition.position)
            if pinned:
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"pinned {', '.join(pinned)} at position {definition.position}: {definition.title}{rule.why}",
                    )
                )
        elif action == "limit" and definition.limit is not None:
            limits.append((definition.limit, _name(rule)))
    if scored and not ranked:
        shown = _ranked(shown, ids, scores)
    if limit is not None:
        limits.append((limit, "request"))
    if limits:
        smallest, source = min(limits)
        if len(shown) > smallest:
            if source != "request":
                reasons.append(DecisionReason(source, f"kept the first {smallest} of {len(shown)} products"))
            shown = shown[:smallest]
    return [products[index] for index in shown], reasons


def _ranked(shown: list[int], ids: list[str], scores: list[int]) -> list[int]:
    """Highest score first; a stable sort keeps the list's order among equals.

    A score belongs to a product id: candidates that share an id rank by the sum of their scores.
    """
    if len(set(ids)) != len(ids):
        by_id: dict[str, int] = {}
        for product_id, score in zip(ids, scores, strict=True):
            by_id[product_id] = by_id.get(product_id, 0) + score
        scores = [by_id[product_id] for product_id in ids]
    rank = [-score for score in scores]
    return sorted(shown, key=rank.__getitem__)


def _exclude(shown: list[int], table: Candidates, attribute: str, values: Sequence[str]) -> tuple[list[int], int, str]:
    """Of ``values``, the first shown one wins; products with the others go."""
    apart = set(values)
    column = table.column(attribute)
    winner = next((column[index] for index in shown if column[index] in apart), None)
    if winner is None:
        return shown, 0, ""
    gone = table.having(attribute, apart - {winner})
    kept = [index for index in shown if index not in gone] if gone else shown
    return kept, len(shown) - len(kept), winner


def _pin(shown: list[int], ids: list[str], pins: Sequence[str], position: int) -> tuple[list[int], list[str]]:
    by_id = {ids[index]: index for index in shown}
    pinned = [pin for pin in dict.fromkeys(pins) if pin in by_id]
    if not pinned:
        return shown, []
    moved = set(pinned)
    rest = [index for index in shown if ids[index] not in moved]
    at = min(position - 1, len(rest))
    return [*rest[:at], *(by_id[pin] for pin in pinned), *rest[at:]], pinned
