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

The list is kept as a bitset of the positions still shown (see :mod:`services.rules.selection`:
each attribute is read once into :class:`~services.rules.selection.Candidates`, and a rule's match is
evaluated for all candidates at once — a match depends only on the product and the visit, so where
a product stands does not change it), and in order only once the order is no longer the
candidates' own. Scores are added up for all positions at once, as fields of one integer (see
:meth:`~services.rules.selection.Candidates.counters`), not product by product.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from typing import Final

from services.rules.catalogue import Product
from services.rules.conditions import Env
from services.rules.definitions import CompiledRule
from services.rules.schemas import DecisionReason
from services.rules.selection import COUNTER_BYTES, Candidates

__all__ = ["STAGES", "apply_rules", "rank", "rule_order"]

STAGES: Final = ("filter", "boost", "exclude", "pin", "limit")
_STAGE_OF: Final = {"filter": 0, "boost": 1, "bury": 1, "exclude": 2, "pin": 3, "limit": 4}
_BIAS: Final = 1 << (8 * COUNTER_BYTES - 2)
"""Added to every score so that each field stays positive (and so the fields independent): a score
is at most 1,000 (the largest weight) times the number of rules in either direction."""


def rule_order(rule: CompiledRule) -> tuple[int, int, str]:
    """Where a rule runs: its step, then higher ``priority`` first, then key."""
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
    shown, reasons = rank(table, sorted(rules, key=rule_order), env, limit)
    products = table.products
    return [products[index] for index in shown], reasons


def rank(
    table: Candidates, ordered: Sequence[CompiledRule], env: Env, limit: int | None
) -> tuple[list[int], list[DecisionReason]]:
    """:func:`apply_rules` on a table for rules already in :func:`rule_order`: the positions shown, in order."""
    alive = table.everyone
    """The positions shown, as a bitset."""
    shown: list[int] | None = None
    """The same positions in the order shown; None while that is the candidates' order."""
    reasons: list[DecisionReason] = []
    scores = 0
    """Per position, a :data:`COUNTER_BYTES` field of the sum of the weights of the boosts and buries
    selecting it (selecting it among all candidates: only shown positions are ranked)."""
    scored = False
    limits: list[tuple[int, str]] = []
    ranked = False
    for rule in ordered:
        if rule.when is not None and rule.when(env) is not True:
            continue
        definition = rule.definition
        action = definition.action
        if action not in ("boost", "bury") and scored and not ranked:
            shown = _ranked(table, alive, scores)
            ranked = True
        if action == "filter":
            hidden = alive & rule.select(env, table)[0] if rule.select is not None else 0
            if hidden:
                alive &= ~hidden
                if shown is not None:
                    shown = [index for index in shown if not hidden >> index & 1]
                reasons.append(
                    DecisionReason(_name(rule), f"hid {hidden.bit_count()} products: {definition.title}{rule.why}")
                )
        elif action in ("boost", "bury"):
            true = rule.select(env, table)[0] if rule.select is not None else 0
            moved = alive & true
            if moved:
                step = definition.weight if action == "boost" else -definition.weight
                scores += step * table.counters(true)
                scored = True
                direction = "up" if step > 0 else "down"
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"moved {moved.bit_count()} products {direction} by {definition.weight}: "
                        f"{definition.title}{rule.why}",
                    )
                )
        elif action == "exclude" and definition.exclude is not None:
            values = definition.exclude.values
            attribute = definition.exclude.attribute
            apart = set(values)
            present = alive & table.having(attribute, apart)
            if not present:
                continue
            first = (present & -present).bit_length() - 1 if shown is None else _first(shown, present)
            winner = table.column(attribute)[first]
            gone = alive & table.having(attribute, apart - {winner})
            if gone:
                alive &= ~gone
                if shown is not None:
                    dropped = set(table.positions(gone))
                    shown = [index for index in shown if index not in dropped]
                reasons.append(
                    DecisionReason(
                        _name(rule),
                        f"removed {gone.bit_count()} products so that {winner} is not shown beside "
                        f"{', '.join(v for v in values if v != winner)}: {definition.title}",
                    )
                )
        elif action == "pin" and definition.pin:
            if shown is None:
                shown = table.positions(alive)
            shown, alive, pinned = _pin(table, shown, alive, definition.pin, definition.position)
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
        shown = _ranked(table, alive, scores)
    if shown is None:
        shown = table.positions(alive)
    if limit is not None:
        limits.append((limit, "request"))
    if limits:
        smallest, source = min(limits)
        if len(shown) > smallest:
            if source != "request":
                reasons.append(DecisionReason(source, f"kept the first {smallest} of {len(shown)} products"))
            shown = shown[:smallest]
    return shown, reasons


def _ranked(table: Candidates, alive: int, scores: int) -> list[int]:
    """The shown positions, highest score first; a stable sort keeps the candidates' order among equals.

    A score belongs to a product id: shown candidates that share an id rank by the sum of their scores.
    """
    shown = table.positions(alive)
    fields = (scores + _BIAS * table.counters(table.everyone)).to_bytes(COUNTER_BYTES * len(table), "little")
    score = array("Q", fields)
    if sys.byteorder != "little":
        score.byteswap()
    if table.shares_ids():
        ids = table.column("id")
        by_id: dict[str, int] = {}
        for index in shown:
            by_id[ids[index]] = by_id.get(ids[index], 0) + score[index] - _BIAS
        return sorted(shown, key=lambda index: by_id[ids[index]], reverse=True)
    return sorted(shown, key=score.__getitem__, reverse=True)


def _first(shown: list[int], among: int) -> int:
    """The first position of ``shown`` in the bitset ``among`` (which has one)."""
    return next(index for index in shown if among >> index & 1)


def _pin(
    table: Candidates, shown: list[int], alive: int, pins: Sequence[str], position: int
) -> tuple[list[int], int, list[str]]:
    """``pins`` shown moved to ``position`` (other candidates with their ids dropped), the new bitset, the ids moved."""
    moved = 0
    chosen: list[int] = []
    pinned: list[str] = []
    for pin in dict.fromkeys(pins):
        having = alive & table.having("id", (pin,))
        if not having:
            continue
        moved |= having
        pinned.append(pin)
        # the last shown candidate with the id, when several have it
        chosen.append(having.bit_length() - 1 if having & (having - 1) == 0 else _last(shown, having))
    if not pinned:
        return shown, alive, []
    dropped = set(table.positions(moved))
    rest = [index for index in shown if index not in dropped]
    at = min(position - 1, len(rest))
    kept = alive & ~moved
    for index in chosen:
        kept |= 1 << index
    return [*rest[:at], *chosen, *rest[at:]], kept, pinned


def _last(shown: list[int], among: int) -> int:
    return next(index for index in reversed(shown) if among >> index & 1)
