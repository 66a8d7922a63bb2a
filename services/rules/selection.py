"""A rule's ``match`` evaluated for the whole candidate list at once.

Evaluated product by product, a match was a Python call per product and per leaf (200 candidates x
30 rules a decision: ~30 % of the rules service's CPU). Here a match is compiled once per
definition version into a :data:`ProductSelector`: a function of the visit's env and the
candidates (:class:`Candidates`) answering a :class:`Selection`, the positions the match is true
for and those it is unknown for (false for the rest). A leaf is tested once per *distinct* value
of its attribute — a list of 200 products has a few dozen brands, categories or prices — and the
positions come from an index built once per decision; ``all``, ``any`` and ``not`` are set
operations.

The semantics are those of :func:`services.rules.conditions.compile_condition`'s evaluator for a
product match (the tests hold the two to each other): a product has every attribute, typed by its
schema, so a leaf with a constant is never unknown; a ``value_from`` that is absent, or a value of a
type the operator cannot compare, is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Final, NamedTuple

from services.rules.catalogue import Product
from services.rules.conditions import MISSING, PRODUCT_TYPES, Condition, Env, Tri, comparison, reader

__all__ = ["CandidateCache", "Candidates", "ProductSelector", "Selection", "compile_selector"]

_NOTHING: Final[frozenset[int]] = frozenset()


class Selection(NamedTuple):
    """Positions in the candidates a match is true for, and those it is unknown for; false elsewhere."""

    true: AbstractSet[int]
    unknown: AbstractSet[int]


class Candidates:
    """The candidates of one decision, each attribute read once: in order, and indexed by value."""

    __slots__ = ("_columns", "_groups", "_products", "everyone", "memo")

    def __init__(self, products: Sequence[Product]) -> None:
        self._products = products
        self._columns: dict[str, list[Any]] = {}
        self._groups: dict[str, dict[Any, list[int]]] = {}
        self.everyone: frozenset[int] = frozenset(range(len(products)))
        self.memo: dict[ProductSelector, Selection] = {}
        """Selections of matches that read only the products (no ``value_from``), by selector: the
        same for every visit, so a table reused for another decision (see
        :class:`CandidateCache`) does not evaluate them again."""

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

    def groups(self, attribute: str) -> dict[Any, list[int]]:
        """Positions by value of ``attribute``; for ``tags``, by each tag a product has.

        Values that are ``==`` share a group (all values of one attribute have the schema's type),
        so a test answers the same for every position of a group.
        """
        groups = self._groups.get(attribute)
        if groups is None:
            column = self.column(attribute)
            if attribute == "tags":
                groups = {}
                for position, tags in enumerate(column):
                    for tag in tags:
                        groups.setdefault(tag, []).append(position)
            else:
                groups = {value: [] for value in dict.fromkeys(column)}  # each distinct value once
                for position, value in enumerate(column):
                    groups[value].append(position)
            self._groups[attribute] = groups
        return groups

    def having(self, attribute: str, values: Iterable[Any]) -> set[int]:
        """Positions whose ``attribute`` equals one of ``values`` (for ``tags``: has one of them)."""
        groups = self.groups(attribute)
        found: set[int] = set()
        for value in values:
            positions = groups.get(value)
            if positions:
                found.update(positions)
        return found


class CandidateCache:
    """Candidate tables by the JSON their products were decoded from, the most recently used kept.

    A shop sends the same list (a category page's products, in its order) for many shoppers: for
    those, the decode, the columns, the value index and the product-only matches (:attr:`Candidates.memo`)
    are done once, not per decision. The key is the exact bytes, so a table is only ever reused for
    the JSON it was decoded from. Bounded in entries and in the bytes of the keys.

    **Admission.** How often each list was seen is counted (by its hash, for the last
    ``remembered`` lists); a list is kept from its second time on, and when the cache is full only
    if it was seen more often than the least recently used table, which it then replaces. A table
    kept and dropped again is dearer than none: it outlives its request, so the garbage collector
    walks its containers and the allocator hands the next decision cold memory (with 300 lists in
    turn and plain LRU, a decision cost ~70 % more CPU than with no cache at all).
    """

    def __init__(self, entries: int = 64, key_bytes: int = 8 * 1024 * 1024, remembered: int = 4096) -> None:
        self._tables: dict[bytes, Candidates] = {}
        self._seen: dict[int, int] = {}
        self._entries = entries
        self._key_bytes = key_bytes
        self._remembered = remembered
        self._held = 0

    def __len__(self) -> int:
        return len(self._tables)

    def get(self, key: bytes) -> Candidates | None:
        table = self._tables.pop(key, None)
        if table is not None:
            self._tables[key] = table  # now the most recently used
            self._count(key)
        return table

    def put(self, key: bytes, table: Candidates) -> None:
        """Keep ``table`` for ``key`` (not found by :meth:`get`) if the admission rule above lets it in."""
        seen = self._count(key)
        if seen < 2 or len(key) > self._key_bytes // 4 or key in self._tables:
            return
        while self._tables and (len(self._tables) >= self._entries or self._held + len(key) > self._key_bytes):
            oldest = next(iter(self._tables))
            if self._seen.get(hash(oldest), 0) >= seen:
                return
            del self._tables[oldest]
            self._held -= len(oldest)
        self._tables[key] = table
        self._held += len(key)

    def clear(self) -> None:
        """Forget every table (and its memoized selections): the compiled definitions changed."""
        self._tables.clear()
        self._held = 0

    def _count(self, key: bytes) -> int:
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

ProductSelector = Callable[[Env, Candidates], Selection]


def compile_selector(condition: Condition) -> ProductSelector:
    """The selector of a product match that :func:`~services.rules.conditions.compile_condition` accepted."""
    select, constant = _compile(condition)
    return _memoized(select) if constant else select


def _compile(condition: Condition) -> tuple[ProductSelector, bool]:
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


def _memoized(inner: ProductSelector) -> ProductSelector:
    """``inner`` evaluated once per candidates table (see :attr:`Candidates.memo`).

    A memoized selection is shared by every decision on the table: no caller changes a selection's
    sets in place (they are typed ``AbstractSet``; the operators here and in
    :mod:`services.rules.merchandising` make new ones).
    """

    def select(env: Env, candidates: Candidates) -> Selection:
        found = candidates.memo.get(select)
        if found is None:
            found = candidates.memo[select] = inner(env, candidates)
        return found

    return select


def _all(children: list[ProductSelector]) -> ProductSelector:
    def select(env: Env, candidates: Candidates) -> Selection:
        true, unknown = children[0](env, candidates)
        for child in children[1:]:
            other_true, other_unknown = child(env, candidates)
            # false if either is false, else unknown if either is unknown, else true
            both = true & other_true
            if unknown or other_unknown:
                unknown = ((true | unknown) & (other_true | other_unknown)) - both
            true = both
        return Selection(true, unknown)

    return select


def _any(children: list[ProductSelector]) -> ProductSelector:
    def select(env: Env, candidates: Candidates) -> Selection:
        true, unknown = children[0](env, candidates)
        for child in children[1:]:
            other_true, other_unknown = child(env, candidates)
            # true if either is true, else unknown if either is unknown, else false
            true = true | other_true
            if unknown or other_unknown:
                unknown = (unknown | other_unknown) - true
        return Selection(true, unknown)

    return select


def _not(inner: ProductSelector) -> ProductSelector:
    def select(env: Env, candidates: Candidates) -> Selection:
        true, unknown = inner(env, candidates)
        return Selection(candidates.everyone - true - unknown, unknown)

    return select


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _static(attribute: str, op: str, expected: Any) -> ProductSelector:
    """A product attribute against a constant whose type suits it (checked at save): never unknown."""
    kind = PRODUCT_TYPES[attribute]
    if op in ("eq", "ne", "in", "not_in") and kind != "list":
        values = expected if op in ("in", "not_in") else [expected]
        if op in ("eq", "in"):
            return lambda _env, candidates: Selection(candidates.having(attribute, values), _NOTHING)
        return lambda _env, candidates: Selection(candidates.everyone - candidates.having(attribute, values), _NOTHING)
    if op == "contains" and kind == "list":
        return lambda _env, candidates: Selection(candidates.having(attribute, [expected]), _NOTHING)
    test = comparison(op)
    return lambda _env, candidates: _tested(candidates, attribute, test, expected)


def _dynamic(attribute: str, op: str, source: str) -> ProductSelector:
    """A product attribute against a profile or context value: unknown where that is absent or does not compare."""
    read, test = reader(source), comparison(op)
    text = PRODUCT_TYPES[attribute] == "text"

    def select(env: Env, candidates: Candidates) -> Selection:
        expected = read(env)
        if expected is MISSING:
            return Selection(_NOTHING, candidates.everyone)
        if text and op in ("in", "not_in"):
            # A text in a list: only the list's texts can equal it (anything else is not a list: unknown).
            if not isinstance(expected, list):
                return Selection(_NOTHING, candidates.everyone)
            found = candidates.having(attribute, [item for item in expected if isinstance(item, str)])
            return Selection(found if op == "in" else candidates.everyone - found, _NOTHING)
        return _tested(candidates, attribute, test, expected)

    return select


def _tested(candidates: Candidates, attribute: str, test: Callable[[Any, Any], bool], expected: Any) -> Selection:
    """``test`` on each distinct value of the attribute (each product's, for ``tags``); TypeError is unknown."""
    true: set[int] = set()
    unknown: set[int] = set()
    if attribute == "tags":
        outcomes: Iterable[tuple[Tri, Iterable[int]]] = (
            (_outcome(test, tags, expected), (position,)) for position, tags in enumerate(candidates.column("tags"))
        )
    else:
        outcomes = (
            (_outcome(test, value, expected), positions) for value, positions in candidates.groups(attribute).items()
        )
    for outcome, positions in outcomes:
        if outcome is True:
            true.update(positions)
        elif outcome is None:
            unknown.update(positions)
    return Selection(true, unknown)


def _outcome(test: Callable[[Any, Any], bool], value: Any, expected: Any) -> Tri:
    try:
        return bool(test(value, expected))
    except TypeError:
        return None
