"""A rule's ``match`` evaluated for the whole candidate list at once, as bitsets.

Evaluated product by product, a match was a Python call per product and per leaf (200 candidates x
30 rules a decision: ~30 % of the rules service's CPU). Here a match is compiled once per
definition version into a :data:`BitSelector`: a function of the visit's env and the candidates
(:class:`Candidates`) answering two bitsets (Python ints, bit *i* for position *i*), the positions
the match is true for and those it is unknown for (false for the rest). A leaf is tested once per
*distinct* value of its attribute — a list of 200 products has a few dozen brands, categories or
prices — and each value's positions come from an index built once per table; ``all``, ``any`` and
``not`` are a few integer operations, not a loop over products.

The semantics are those of :func:`services.rules.conditions.compile_condition`'s evaluator for a
product match (the tests hold the two to each other): a product has every attribute, typed by its
schema, so a leaf with a constant is never unknown; a ``value_from`` that is absent, or a value of a
type the operator cannot compare, is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from itertools import compress
from typing import Any, Final, NamedTuple

from services.rules.catalogue import Product
from services.rules.conditions import MISSING, PRODUCT_TYPES, Condition, Env, Tri, comparison, reader

__all__ = [
    "BitSelector",
    "CandidateCache",
    "Candidates",
    "ProductSelector",
    "Selection",
    "compile_bits",
    "compile_selector",
]

_COUNTERS_KEPT: Final = 64
"""Counters kept per table and width (at most 500 x 8 bytes each): the product-only matches' and the
first few visit-dependent ones; others are made again when needed."""
_FLAGS: Final = bytes.maketrans(b"01", b"\x00\x01")


class Selection(NamedTuple):
    """Positions in the candidates a match is true for, and those it is unknown for; false elsewhere."""

    true: AbstractSet[int]
    unknown: AbstractSet[int]


class Candidates:
    """The candidates of one decision, each attribute read once: in order, and indexed by value."""

    __slots__ = ("_columns", "_counters", "_index", "_products", "_shares_ids", "_tag_lists", "everyone", "memo")

    def __init__(self, products: Sequence[Product]) -> None:
        self._products = products
        self._columns: dict[str, list[Any]] = {}
        self._index: dict[str, dict[Any, int]] = {}
        self._tag_lists: list[tuple[list[str], int]] | None = None
        self._counters: dict[int, dict[int, int]] = {}
        """By field width, by bitset."""
        self.everyone: int = (1 << len(products)) - 1
        """Every position's bit."""
        self.memo: dict[BitSelector, tuple[int, int]] = {}
        """Selections of matches that read only the products (no ``value_from``), by selector: the
        same for every visit, so a table reused for another decision (see
        :class:`CandidateCache`) does not evaluate them again."""
        self._shares_ids: bool | None = None

    def __len__(self) -> int:
        return len(self._products)

    @property
    def products(self) -> Sequence[Product]:
        return self._products

    def column(self, attribute: str) -> list[Any]:
        """Every candidate's ``attribute``, in the candidates' order."""
        column = self._columns.get(attribute)
        if column is None:
            column = self._columns[attribute] = _READ_COLUMN[attribute](self._products)
        return column

    def shares_ids(self) -> bool:
        """Whether two candidates have the same id (their scores then add up, see the ranking)."""
        if self._shares_ids is None:
            ids = self.column("id")
            self._shares_ids = len(set(ids)) != len(ids)
        return self._shares_ids

    def index(self, attribute: str) -> dict[Any, int]:
        """The bitset of positions by value of ``attribute``; for ``tags``, by each tag a product has.

        Values that are ``==`` share an entry (all values of one attribute have the schema's type),
        so a test answers the same for every position of an entry.
        """
        index = self._index.get(attribute)
        if index is None:
            index = {}
            if attribute == "tags":
                for position, tags in enumerate(self.column("tags")):
                    for tag in tags:
                        index[tag] = index.get(tag, 0) | 1 << position
            else:
                for position, value in enumerate(self.column(attribute)):
                    index[value] = index.get(value, 0) | 1 << position
            self._index[attribute] = index
        return index

    def tag_lists(self) -> list[tuple[list[str], int]]:
        """Each distinct list of tags, and the bitset of the positions that have it."""
        if self._tag_lists is None:
            lists: dict[tuple[str, ...], tuple[list[str], int]] = {}
            for position, tags in enumerate(self.column("tags")):
                key = tuple(tags)
                found = lists.get(key)
                lists[key] = (tags, 1 << position) if found is None else (found[0], found[1] | 1 << position)
            self._tag_lists = list(lists.values())
        return self._tag_lists

    def having(self, attribute: str, values: Iterable[Any]) -> int:
        """Positions whose ``attribute`` equals one of ``values`` (for ``tags``: has one of them)."""
        index = self.index(attribute)
        found = 0
        for value in values:
            found |= index.get(value, 0)
        return found

    def positions(self, bits: int) -> list[int]:
        """The positions of ``bits``, in order (a C loop over its binary digits, not a Python one)."""
        return list(compress(range(len(self._products)), bin(bits)[:1:-1].encode().translate(_FLAGS)))

    def counters(self, bits: int, width: int) -> int:
        """``bits`` spread to one ``width``-byte little-endian field per position (1 for a set bit):
        adding ``weight * counters(selected, width)`` adds ``weight`` to every selected position's
        field at once (see :func:`services.rules.merchandising.rank`)."""
        kept = self._counters.get(width)
        if kept is None:
            kept = self._counters[width] = {}
        found = kept.get(bits)
        if found is None:
            flags = bin(bits)[:1:-1].encode().translate(_FLAGS)
            fields = bytearray(width * len(flags))
            fields[::width] = flags
            found = int.from_bytes(fields, "little")
            if len(kept) < _COUNTERS_KEPT:
                kept[bits] = found
        return found


class CandidateCache:
    """Candidate tables by the JSON their products were decoded from, or by its SHA-256, the most
    recently used kept.

    A shop sends the same list (a category page's products, in its order) for many shoppers: for
    those, the decode, the columns, the value index, the product-only matches
    (:attr:`Candidates.memo`) and their score counters (:meth:`Candidates.counters`) are done once,
    not per decision. The key is the exact bytes (``bytes``), or the lowercase hex SHA-256 of them
    (``str``: a request's ``candidates_digest``, checked against the bytes before a table is kept
    under it), so a table is only ever reused for the JSON it was decoded from. Bounded in entries
    and in the bytes of the lists held.

    **Admission.** How often each list was seen is counted (by its key's hash, for the last
    ``remembered`` lists); a list is kept from its second time on, and when the cache is full only
    if it was seen more often than the least recently used table, which it then replaces. A table
    kept and dropped again is dearer than none: it outlives its request, so the garbage collector
    walks its containers and the allocator hands the next decision cold memory (with 300 lists in
    turn and plain LRU, a decision cost ~70 % more CPU than with no cache at all). A list sent with
    its digest (a ``str`` key) is also kept at its first sighting while that drops no other table:
    its sender (the gateway) sends the digest alone from the next decision on, which spares the
    second ~24 KB send and decode. When the cache is full it is admitted by the rule above, so 1000
    lists in turn still do not churn it, nor make a gateway told "held" send digests of tables
    dropped meanwhile (each a 409 and a resend; figures in bench/README.md).
    """

    def __init__(self, entries: int = 64, key_bytes: int = 8 * 1024 * 1024, remembered: int = 4096) -> None:
        self._tables: dict[bytes | str, Candidates] = {}
        self._sizes: dict[bytes | str, int] = {}
        self._seen: dict[int, int] = {}
        self._entries = entries
        self._key_bytes = key_bytes
        self._remembered = remembered
        self._held = 0

    def __len__(self) -> int:
        return len(self._tables)

    def __contains__(self, key: bytes | str) -> bool:
        return key in self._tables

    def get(self, key: bytes | str) -> Candidates | None:
        table = self._tables.pop(key, None)
        if table is not None:
            self._tables[key] = table  # now the most recently used
            self._count(key)
        return table

    def put(self, key: bytes | str, table: Candidates, size: int | None = None) -> bool:
        """Keep ``table`` for ``key`` (not found by :meth:`get`) if the admission rule above lets it in;
        whether a table is held for ``key`` now. ``size``: the bytes of its JSON (a ``bytes`` key's length)."""
        size = len(key) if size is None else size
        seen = self._count(key)
        if key in self._tables:
            return True
        if size > self._key_bytes // 4:
            return False
        if seen < 2 and (not isinstance(key, str) or not self._room_for(size)):
            return False
        while self._tables and (len(self._tables) >= self._entries or self._held + size > self._key_bytes):
            oldest = next(iter(self._tables))
            if self._seen.get(hash(oldest), 0) >= seen:
                return False
            del self._tables[oldest]
            self._held -= self._sizes.pop(oldest)
        self._tables[key] = table
        self._sizes[key] = size
        self._held += size
        return True

    def _room_for(self, size: int) -> bool:
        return len(self._tables) < self._entries and self._held + size <= self._key_bytes

    def clear(self) -> None:
        """Forget every table (and its memoized selections): the compiled definitions changed."""
        self._tables.clear()
        self._sizes.clear()
        self._held = 0

    def _count(self, key: bytes | str) -> int:
        digest = hash(key)
        seen = self._seen.pop(digest, 0) + 1
        if len(self._seen) >= self._remembered:
            del self._seen[next(iter(self._seen))]
        self._seen[digest] = seen
        return seen


_READ_COLUMN: Final[dict[str, Callable[[Sequence[Product]], list[Any]]]] = {
    "id": lambda products: [product.id for product in products],
    "brand": lambda products: [product.brand for product in products],
    "category": lambda products: [product.category for product in products],
    "department": lambda products: [product.department for product in products],
    "price": lambda products: [product.price for product in products],
    "on_sale": lambda products: [product.on_sale for product in products],
    "tags": lambda products: [product.tags for product in products],
}
"""One comprehension per attribute: twice as fast as ``map(attrgetter(...))`` over Structs."""


BitSelector = Callable[[Env, Candidates], tuple[int, int]]
"""A match over a table: the bitsets of the positions it is true for and unknown for."""
ProductSelector = Callable[[Env, Candidates], Selection]


def compile_selector(condition: Condition) -> ProductSelector:
    """The selector of a product match that :func:`~services.rules.conditions.compile_condition`
    accepted, answering sets of positions (see :func:`compile_bits` for the bitsets it is made of)."""
    select = compile_bits(condition)

    def selection(env: Env, candidates: Candidates) -> Selection:
        true, unknown = select(env, candidates)
        return Selection(frozenset(candidates.positions(true)), frozenset(candidates.positions(unknown)))

    return selection


def compile_bits(condition: Condition) -> BitSelector:
    """The bitset selector of a product match that :func:`~services.rules.conditions.compile_condition` accepted."""
    select, constant = _compile(condition)
    return _memoized(select) if constant else select


def _compile(condition: Condition) -> tuple[BitSelector, bool]:
    """The selector, and whether it reads only the products (its answer is the same for every visit)."""
    if condition.all is not None or condition.any is not None:
        join, nodes = (_all, condition.all) if condition.all is not None else (_any, condition.any or [])
        children = [_compile(child) for child in nodes]
        return join([select for select, _ in children]), all(constant for _, constant in children)
    if condition.not_ is not None:
        inner, constant = _compile(condition.not_)
        return _not(inner), constant
    if condition.field is None or condition.op is None or not condition.field.startswith("product."):
        raise ValueError("a product match is all, any, not and product.<attribute> leaves")
    attribute = condition.field.removeprefix("product.")
    if condition.value_from is not None:
        return _dynamic(attribute, condition.op, condition.value_from), False
    return _static(attribute, condition.op, condition.value), True


def _memoized(inner: BitSelector) -> BitSelector:
    """``inner`` evaluated once per candidates table (see :attr:`Candidates.memo`)."""

    def select(env: Env, candidates: Candidates) -> tuple[int, int]:
        found = candidates.memo.get(select)
        if found is None:
            found = candidates.memo[select] = inner(env, candidates)
        return found

    return select


def _all(children: list[BitSelector]) -> BitSelector:
    def select(env: Env, candidates: Candidates) -> tuple[int, int]:
        true, unknown = children[0](env, candidates)
        for child in children[1:]:
            other_true, other_unknown = child(env, candidates)
            # false if either is false, else unknown if either is unknown, else true
            both = true & other_true
            if unknown or other_unknown:
                unknown = ((true | unknown) & (other_true | other_unknown)) & ~both
            true = both
        return true, unknown

    return select


def _any(children: list[BitSelector]) -> BitSelector:
    def select(env: Env, candidates: Candidates) -> tuple[int, int]:
        true, unknown = children[0](env, candidates)
        for child in children[1:]:
            other_true, other_unknown = child(env, candidates)
            # true if either is true, else unknown if either is unknown, else false
            true |= other_true
            if unknown or other_unknown:
                unknown = (unknown | other_unknown) & ~true
        return true, unknown

    return select


def _not(inner: BitSelector) -> BitSelector:
    def select(env: Env, candidates: Candidates) -> tuple[int, int]:
        true, unknown = inner(env, candidates)
        return candidates.everyone & ~(true | unknown), unknown

    return select


def _static(attribute: str, op: str, expected: Any) -> BitSelector:
    """A product attribute against a constant whose type suits it (checked at save): never unknown."""
    kind = PRODUCT_TYPES[attribute]
    if op in ("eq", "ne", "in", "not_in") and kind != "list":
        values = expected if op in ("in", "not_in") else [expected]
        if op in ("eq", "in"):
            return lambda _env, candidates: (candidates.having(attribute, values), 0)
        return lambda _env, candidates: (candidates.everyone & ~candidates.having(attribute, values), 0)
    if op == "contains" and kind == "list":
        return lambda _env, candidates: (candidates.having(attribute, [expected]), 0)
    test = comparison(op)
    return lambda _env, candidates: _tested(candidates, attribute, test, expected)


def _dynamic(attribute: str, op: str, source: str) -> BitSelector:
    """A product attribute against a profile or context value: unknown where that is absent or does not compare."""
    read, test = reader(source), comparison(op)
    text = PRODUCT_TYPES[attribute] == "text"

    def select(env: Env, candidates: Candidates) -> tuple[int, int]:
        expected = read(env)
        if expected is MISSING:
            return 0, candidates.everyone
        if text and op in ("in", "not_in"):
            # A text in a list: only the list's texts can equal it (anything else is not a list: unknown).
            if not isinstance(expected, list):
                return 0, candidates.everyone
            found = candidates.having(attribute, [item for item in expected if isinstance(item, str)])
            return (found if op == "in" else candidates.everyone & ~found), 0
        return _tested(candidates, attribute, test, expected)

    return select


def _tested(candidates: Candidates, attribute: str, test: Callable[[Any, Any], bool], expected: Any) -> tuple[int, int]:
    """``test`` on each distinct value of the attribute (each distinct tag list, for ``tags``); TypeError is unknown."""
    true = unknown = 0
    groups = candidates.tag_lists() if attribute == "tags" else candidates.index(attribute).items()
    for value, positions in groups:
        outcome = _outcome(test, value, expected)
        if outcome is True:
            true |= positions
        elif outcome is None:
            unknown |= positions
    return true, unknown


def _outcome(test: Callable[[Any, Any], bool], value: Any, expected: Any) -> Tri:
    try:
        return bool(test(value, expected))
    except TypeError:
        return None
