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
from services.rules.selection import Candidates

__all__ = ["STAGES", "apply_rules", "rank", "rule_order"]

STAGES: Final = ("filter", "boost", "exclude", "pin", "limit")
_STAGE_OF: Final = {"filter": 0, "boost": 1, "bury": 1, "exclude": 2, "pin": 3, "limit": 4}
_TYPECODES: Final = {array(code).itemsize: code for code in "QLIH"}
"""An unsigned array type of each size (2, 4, 8 bytes)."""


def rule_order(rule: CompiledRule) -> tuple[int, int, str]:
    """Where a rule runs: its step, then higher ``priority`` first, then key."""
    return (_STAGE_OF[rule.definition.action], -rule.definition.priority, rule.key)


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
    """:func:`apply_rules` on a table for rules already in :func:`rule_order`: the positions shown, in order.

    The ranking's key is taken when the boosts and buries are done (as the ranking itself is), but
    the list is sorted only when its order is needed (a pin, the end): an exclusion meanwhile
    removes positions from the bitset, and sorting what is left by the same key is the same list.
    """
    alive = table.everyone
    """The positions shown, as a bitset."""
    shown: list[int] | None = None
    """The same positions in the order shown; None until a pin or the end needs them in order."""
    reasons: list[DecisionReason] = []
    width = _width(len(ordered))
    scores = 0
    """Per position, a ``width``-byte field of the sum of the weights of the boosts and buries selecting
    it (selecting it among all candidates: only shown positions are ranked)."""
    scored = False
    key: Sequence[int] | None = None
    """The ranking's key by position, highest first (once the boosts and buries are done)."""
    limits: list[tuple[int, str]] = []
    for rule in ordered:
        if rule.when is not None and rule.when(env) is not True:
            continue
        definition = rule.definition
        action = definition.action
        if action not in ("boost", "bury") and scored and key is None:
            key = _key(table, alive, scores, width)
        if action == "filter":
            hidden = alive & rule.select(env, table)[0] if rule.select is not None else 0
            if hidden:
                alive &= ~hidden
                if shown is not None:
                    shown = [index for index in shown if not hidden >> index & 1]
                reasons.append(
                    DecisionReason(rule.name, f"hid {hidden.bit_count()} products: {definition.title}{rule.why}")
                )
        elif action in ("boost", "bury"):
            true = rule.select(env, table)[0] if rule.select is not None else 0
            moved = alive & true
            if moved:
                step = definition.weight if action == "boost" else -definition.weight
                scores += step * table.counters(true, width)
                scored = True
                direction = "up" if step > 0 else "down"
                reasons.append(
                    DecisionReason(
                        rule.name,
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
            if shown is not None:
                first = next(index for index in shown if present >> index & 1)
            elif key is not None:
                first = max(table.positions(present), key=key.__getitem__)  # the first of the highest
            else:
                first = (present & -present).bit_length() - 1
            winner = table.column(attribute)[first]
            gone = alive & table.having(attribute, apart - {winner})
            if gone:
                alive &= ~gone
                if shown is not None:
                    shown = [index for index in shown if not gone >> index & 1]
                reasons.append(
                    DecisionReason(
                        rule.name,
                        f"removed {gone.bit_count()} products so that {winner} is not shown beside "
                        f"{', '.join(v for v in values if v != winner)}: {definition.title}",
                    )
                )
        elif action == "pin" and definition.pin:
            if shown is None:
                shown = _in_order(table, alive, key)
            shown, alive, pinned = _pin(table, shown, alive, definition.pin, definition.position)
            if pinned:
                reasons.append(
                    DecisionReason(
                        rule.name,
                        f"pinned {', '.join(pinned)} at position {definition.position}: {definition.title}{rule.why}",
                    )
                )
        elif action == "limit" and definition.limit is not None:
            limits.append((definition.limit, rule.name))
    if shown is None:
        if scored and key is None:
            key = _key(table, alive, scores, width)
        shown = _in_order(table, alive, key)
    if limit is not None:
        limits.append((limit, "request"))
    if limits:
        smallest, source = min(limits)
        if len(shown) > smallest:
            if source != "request":
                reasons.append(DecisionReason(source, f"kept the first {smallest} of {len(shown)} products"))
            shown = shown[:smallest]
    return shown, reasons


def _width(rules: int) -> int:
    """Bytes per score field: a score is within 1,000 (the largest weight) times the number of rules of 0."""
    return next(width for width in (2, 4, 8) if 1000 * rules < 1 << (8 * width - 1))


def _key(table: Candidates, alive: int, scores: int, width: int) -> Sequence[int]:
    """Each position's score, read from the fields of ``scores``.

    A score belongs to a product id: shown candidates that share an id rank by the sum of their scores.
    """
    bias = 1 << (8 * width - 1)  # keeps every field positive, so the fields do not borrow from each other
    fields = (scores + bias * table.counters(table.everyone, width)).to_bytes(width * len(table), "little")
    score = array(_TYPECODES[width], fields)
    if sys.byteorder != "little":
        score.byteswap()
    if not table.shares_ids():
        return score
    ids = table.column("id")
    by_id: dict[str, int] = {}
    for index in table.positions(alive):
        by_id[ids[index]] = by_id.get(ids[index], 0) + score[index] - bias
    return [by_id.get(product_id, 0) for product_id in ids]


def _in_order(table: Candidates, alive: int, key: Sequence[int] | None) -> list[int]:
    """The positions of ``alive``, highest ``key`` first; a stable sort keeps the candidates' order among equals."""
    shown = table.positions(alive)
    return shown if key is None else sorted(shown, key=key.__getitem__, reverse=True)


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
        if having & (having - 1):  # several shown candidates have the id: the last one shown moves
            chosen.append(next(index for index in reversed(shown) if having >> index & 1))
        else:
            chosen.append(having.bit_length() - 1)
    if not pinned:
        return shown, alive, []
    rest = [index for index in shown if not moved >> index & 1]
    at = min(position - 1, len(rest))
    kept = alive & ~moved
    for index in chosen:
        kept |= 1 << index
    return [*rest[:at], *chosen, *rest[at:]], kept, pinned
