"""Condition trees: their shape, their checks at save time and their three-valued evaluation.

A condition is a tree of ``{"all": [...]}``, ``{"any": [...]}``, ``{"not": {...}}`` and leaves:

- ``{"field": "profile.favourite_categories", "op": "contains", "value": "jeans"}`` over a released
  profile field or quiz trait (one key deeper for object fields: ``profile.price_range.max``);
- ``{"field": "context.days_since_last_visit", "op": "gte", "value": 90}`` over the visit context;
- ``{"field": "product.on_sale", "op": "eq", "value": false}`` over a candidate product (only in a
  merchandising rule's ``match``), optionally compared with a profile or context value instead of
  a constant: ``{"field": "product.brand", "op": "in", "value_from": "profile.favourite_brands"}``;
- ``{"segment": "sale-seekers"}``: another segment of the same purpose.

**Three-valued logic.** A leaf whose field is absent — the gateway withheld it, the visit did not
say — is *unknown*, and so is a leaf whose value has an unexpected type. ``all`` is false if any
child is false, else unknown if any is unknown; ``any`` is true if any child is true, else unknown
if any is unknown; ``not`` of unknown is unknown. Only *true* matches: a withheld field can never
make a segment match, not even through ``not``.

**Bounds.** At most :data:`MAX_DEPTH` levels and :data:`MAX_NODES` nodes per tree, 50 children per
node, 50 values per list: a definition is data from an API and is held to a size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, get_args

import msgspec

from tillit.patterns import exact

__all__ = [
    "CONTEXT_TYPES",
    "MAX_DEPTH",
    "MAX_NODES",
    "MISSING",
    "OPS",
    "PRODUCT_TYPES",
    "Condition",
    "ConditionProblem",
    "Env",
    "Evaluator",
    "FieldType",
    "Scope",
    "Tri",
    "comparison",
    "compile_condition",
    "describe",
    "field_references",
    "reader",
    "segment_references",
]

MAX_DEPTH: Final = 6
MAX_NODES: Final = 100

Op = Literal[
    "eq",
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "between",
    "in",
    "not_in",
    "contains",
    "contains_any",
    "contains_all",
    "starts_with",
    "ends_with",
]
OPS: Final[tuple[str, ...]] = get_args(Op)
Scalar = Annotated[str, msgspec.Meta(max_length=200)] | int | float | bool
FieldPath = Annotated[
    str,
    msgspec.Meta(
        pattern=exact(r"^(profile|context|product)(\.[a-z][a-z0-9_]{0,63}){1,2}$"),
        description="profile.<field or trait>[.<key>], context.<key> or product.<attribute>",
    ),
]
SegmentRef = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z][a-z0-9_.-]{0,63}$"))]


class Condition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One node: exactly one of ``all``, ``any``, ``not``, ``segment`` or a leaf (``field``, ``op``, value)."""

    all: Annotated[list[Condition], msgspec.Meta(min_length=1, max_length=50)] | None = None
    any: Annotated[list[Condition], msgspec.Meta(min_length=1, max_length=50)] | None = None
    not_: Condition | None = msgspec.field(default=None, name="not")
    segment: SegmentRef | None = None
    field: FieldPath | None = None
    op: Op | None = None
    value: Scalar | Annotated[list[Scalar], msgspec.Meta(max_length=50)] | None = None
    value_from: FieldPath | None = None


Tri = bool | None
"""True, False or None (unknown)."""

FieldType = Literal["text", "number", "bool", "list", "object", "any"]
Scope = Literal["segment", "product"]

CONTEXT_TYPES: Final[dict[str, FieldType]] = {
    "page": "text",
    "product_id": "text",
    "product_brand": "text",
    "department": "text",
    "category": "text",
    "visit_count": "number",
    "days_since_last_visit": "number",
    "days_since_last_purchase": "number",
}
"""What ``context.<key>`` may name (the request context the gateway passes on)."""

PRODUCT_TYPES: Final[dict[str, FieldType]] = {
    "id": "text",
    "brand": "text",
    "category": "text",
    "department": "text",
    "price": "number",
    "on_sale": "bool",
    "tags": "list",
}


class ConditionProblem(Exception):
    """A definition that cannot be saved: ``path`` is where in it (``when.all[1].op``)."""

    def __init__(self, path: str, problem: str, slug: str = "invalid-condition") -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.slug = slug


@dataclass(slots=True)
class Env:
    """What one evaluation sees: the filtered profile, the context, segment results, a product."""

    profile: Mapping[str, Any]
    context: Mapping[str, Any]
    segment: Callable[[str], Tri] = lambda _: None
    product: Any = None


Evaluator = Callable[[Env], Tri]


@dataclass
class _Walk:
    """State of one check-and-compile walk over a tree."""

    scope: Scope
    field_type: Callable[[str], tuple[FieldType, tuple[str, ...]]]
    """Type of a ``profile.`` / ``context.`` / ``product.`` path, and its allowed values (enums)."""
    segment_exists: Callable[[str], bool]
    nodes: int = 0
    fields: list[tuple[str, str]] = field(default_factory=list)
    segments: list[tuple[str, str]] = field(default_factory=list)


def compile_condition(
    condition: Condition,
    path: str,
    *,
    scope: Scope,
    field_type: Callable[[str], tuple[FieldType, tuple[str, ...]]],
    segment_exists: Callable[[str], bool] = lambda _: True,
) -> Evaluator:
    """Check ``condition`` (shape, bounds, types, reachability) and compile it to an evaluator.

    ``field_type`` raises :class:`ConditionProblem` for a path it does not know. Raises
    :class:`ConditionProblem` naming the first problem's place.
    """
    walk = _Walk(scope, field_type, segment_exists)
    return _compile(condition, path, 1, walk)


def describe(condition: Condition, limit: int = 160) -> str:
    """A short human reading of a condition, for reasons: ``segment sale-seeker``, ``context.page eq 'product'``."""
    text = _describe(condition, 0)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _describe(node: Condition, depth: int) -> str:
    if depth > MAX_DEPTH:
        return "…"
    if node.segment is not None:
        return f"segment {node.segment}"
    if node.not_ is not None:
        return f"not ({_describe(node.not_, depth + 1)})"
    for joiner, children in ((" and ", node.all), (" or ", node.any)):
        if children is not None:
            parts = [_describe(child, depth + 1) for child in children]
            return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
    value = node.value_from if node.value_from is not None else repr(node.value)
    return f"{node.field} {node.op} {value}"


def field_references(condition: Condition) -> list[str]:
    """Every ``field`` and ``value_from`` path in the tree."""
    found: list[str] = []
    _visit(condition, lambda node: found.extend(p for p in (node.field, node.value_from) if p))
    return found


def segment_references(condition: Condition) -> list[str]:
    found: list[str] = []
    _visit(condition, lambda node: found.extend([node.segment] if node.segment else []))
    return found


def _visit(condition: Condition, see: Callable[[Condition], None], depth: int = 0) -> None:
    if depth > MAX_DEPTH + 1:
        return
    see(condition)
    for child in (*(condition.all or ()), *(condition.any or ()), *((condition.not_,) if condition.not_ else ())):
        _visit(child, see, depth + 1)


def _kind(node: Condition, path: str) -> str:
    kinds = [
        name
        for name, present in (
            ("all", node.all is not None),
            ("any", node.any is not None),
            ("not", node.not_ is not None),
            ("segment", node.segment is not None),
            ("field", node.field is not None),
        )
        if present
    ]
    if len(kinds) != 1:
        raise ConditionProblem(
            path, f"a condition is exactly one of all, any, not, segment or field (found {', '.join(kinds) or 'none'})"
        )
    kind = kinds[0]
    if kind != "field" and (node.op is not None or node.value is not None or node.value_from is not None):
        raise ConditionProblem(path, "op, value and value_from belong to a field condition only")
    return kind


def _compile(node: Condition, path: str, depth: int, walk: _Walk) -> Evaluator:
    if depth > MAX_DEPTH:
        raise ConditionProblem(path, f"conditions nest deeper than {MAX_DEPTH} levels", "condition-too-deep")
    walk.nodes += 1
    if walk.nodes > MAX_NODES:
        raise ConditionProblem(path, f"a condition tree has at most {MAX_NODES} nodes", "condition-too-large")
    kind = _kind(node, path)
    if kind == "all":
        children = [_compile(child, f"{path}.all[{i}]", depth + 1, walk) for i, child in enumerate(node.all or ())]
        _check_all_reachable(node.all or [], path)
        return _all(children)
    if kind == "any":
        children = [_compile(child, f"{path}.any[{i}]", depth + 1, walk) for i, child in enumerate(node.any or ())]
        return _any(children)
    if kind == "not":
        assert node.not_ is not None
        inner = _compile(node.not_, f"{path}.not", depth + 1, walk)
        return _not(inner)
    if kind == "segment":
        key = node.segment or ""
        if walk.scope == "product":
            raise ConditionProblem(path, "a product match reads product attributes, not segments (use the rule's when)")
        if not walk.segment_exists(key):
            raise ConditionProblem(
                f"{path}.segment", f"no segment {key!r} is defined for this purpose", "unknown-segment"
            )
        walk.segments.append((path, key))
        return lambda env: env.segment(key)
    return _leaf(node, path, walk)


def _all(children: list[Evaluator]) -> Evaluator:
    def evaluate(env: Env) -> Tri:
        unknown = False
        for child in children:
            outcome = child(env)
            if outcome is False:
                return False
            if outcome is None:
                unknown = True
        return None if unknown else True

    return evaluate


def _any(children: list[Evaluator]) -> Evaluator:
    def evaluate(env: Env) -> Tri:
        unknown = False
        for child in children:
            outcome = child(env)
            if outcome is True:
                return True
            if outcome is None:
                unknown = True
        return None if unknown else False

    return evaluate


def _not(inner: Evaluator) -> Evaluator:
    def evaluate(env: Env) -> Tri:
        outcome = inner(env)
        return None if outcome is None else not outcome

    return evaluate


_NUMERIC: Final = frozenset({"lt", "lte", "gt", "gte", "between"})
_LIST_VALUE: Final = frozenset({"in", "not_in", "contains_any", "contains_all", "between"})


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar_fits(kind: FieldType, value: object) -> bool:
    if kind == "number":
        return _is_number(value)
    if kind == "text":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    return True


def _leaf(node: Condition, path: str, walk: _Walk) -> Evaluator:
    name = node.field or ""
    if node.op is None:
        raise ConditionProblem(path, f"field condition on {name!r} has no op (one of {', '.join(OPS)})")
    op = node.op
    source = name.split(".", 1)[0]
    if source == "product" and walk.scope != "product":
        raise ConditionProblem(f"{path}.field", "product attributes can only be read in a rule's match")
    if source != "product" and walk.scope == "product" and node.value_from is None:
        raise ConditionProblem(f"{path}.field", "a product match reads product.<attribute> fields")
    kind, allowed = _typed(walk, name, f"{path}.field")
    walk.fields.append((f"{path}.field", name))
    if kind == "object":
        raise ConditionProblem(f"{path}.field", f"{name} is an object: name one of its keys, e.g. {name}.max")
    if node.value_from is not None:
        if node.value is not None:
            raise ConditionProblem(path, "give value or value_from, not both")
        if walk.scope != "product" or source != "product":
            raise ConditionProblem(f"{path}.value_from", "value_from compares a product attribute with a profile value")
        if node.value_from.startswith("product."):
            raise ConditionProblem(f"{path}.value_from", "value_from reads profile.<field> or context.<key>")
        from_kind, _ = _typed(walk, node.value_from, f"{path}.value_from")
        walk.fields.append((f"{path}.value_from", node.value_from))
        _check_types(op, kind, from_kind, path)
        return _dynamic_leaf(name, op, node.value_from)
    if node.value is None:
        raise ConditionProblem(f"{path}.value", f"op {op!r} needs a value")
    value = node.value
    _check_value(op, kind, value, allowed, path)
    return _static_leaf(name, op, value)


def _typed(walk: _Walk, name: str, where: str) -> tuple[FieldType, tuple[str, ...]]:
    try:
        return walk.field_type(name)
    except ConditionProblem as problem:
        raise ConditionProblem(where, problem.problem, problem.slug) from problem


def _check_types(op: str, kind: FieldType, from_kind: FieldType, path: str) -> None:
    """``product.X op value_from``: the value's type must suit the op."""
    if op in ("in", "not_in") and from_kind not in ("list", "any"):
        raise ConditionProblem(f"{path}.value_from", f"op {op!r} needs a list to look in (got a {from_kind})")
    if op in _NUMERIC and (kind not in ("number", "any") or from_kind not in ("number", "any")):
        raise ConditionProblem(f"{path}.op", f"op {op!r} compares numbers")
    if op == "between":
        raise ConditionProblem(f"{path}.op", "between takes a constant [low, high]")


def _check_value(op: str, kind: FieldType, value: Any, allowed: tuple[str, ...], path: str) -> None:
    where = f"{path}.value"
    if op in _LIST_VALUE and not isinstance(value, list):
        raise ConditionProblem(where, f"op {op!r} takes a list of values")
    if op not in _LIST_VALUE and isinstance(value, list):
        raise ConditionProblem(where, f"op {op!r} takes one value, not a list")
    if op in _NUMERIC:
        if kind not in ("number", "any"):
            raise ConditionProblem(f"{path}.op", f"op {op!r} compares numbers; this field is {kind}", "type-error")
        numbers = value if isinstance(value, list) else [value]
        if not all(_is_number(item) for item in numbers):
            raise ConditionProblem(where, f"op {op!r} compares numbers, got {value!r}", "type-error")
        if op == "between":
            if len(value) != 2:
                raise ConditionProblem(where, "between takes [low, high]")
            if value[0] > value[1]:
                raise ConditionProblem(where, f"between {value!r} can never match (low > high)", "unreachable")
        return
    if op in ("contains_any", "contains_all", "contains"):
        if kind not in ("list", "any") and not (op == "contains" and kind == "text"):
            raise ConditionProblem(f"{path}.op", f"op {op!r} looks into a list; this field is {kind}", "type-error")
        items = value if isinstance(value, list) else [value]
        if op == "contains_any" and not items:
            raise ConditionProblem(where, "contains_any [] can never match", "unreachable")
        _check_allowed(items, allowed, where, every=op != "contains_any")
        return
    if op in ("starts_with", "ends_with"):
        if kind not in ("text", "any"):
            raise ConditionProblem(f"{path}.op", f"op {op!r} reads text; this field is {kind}", "type-error")
        if not isinstance(value, str):
            raise ConditionProblem(where, f"op {op!r} takes a text value", "type-error")
        return
    if kind == "list":
        raise ConditionProblem(f"{path}.op", "this field is a list: use contains, contains_any or contains_all")
    items = value if isinstance(value, list) else [value]
    if op == "in" and not items:
        raise ConditionProblem(where, "in [] can never match", "unreachable")
    for item in items:
        if not _scalar_fits(kind, item):
            raise ConditionProblem(where, f"{item!r} is not a {kind} like the field", "type-error")
    if op in ("eq", "in"):
        _check_allowed(items, allowed, where, every=op == "eq")


def _check_allowed(items: list[Any], allowed: tuple[str, ...], where: str, *, every: bool) -> None:
    """Enum and list traits take only their declared values: anything else can never match."""
    if not allowed:
        return
    outside = [item for item in items if item not in allowed]
    if (every and outside) or (not every and items and len(outside) == len(items)):
        raise ConditionProblem(
            where,
            f"{', '.join(map(repr, outside))} is never a value of this field ({', '.join(allowed)})",
            "unreachable",
        )


def _check_all_reachable(children: list[Condition], path: str) -> None:
    """Leaves inside one ``all`` that contradict each other on the same field: the branch never matches."""
    low: dict[str, tuple[float, bool, int]] = {}
    high: dict[str, tuple[float, bool, int]] = {}
    equal: dict[str, tuple[Any, int]] = {}
    for index, child in enumerate(children):
        if child.field is None or child.value is None or child.op is None:
            continue
        name, op, value = child.field, child.op, child.value
        bounds: list[tuple[str, float, bool]] = []
        if op in ("gt", "gte") and _is_number(value):
            bounds.append(("low", float(value), op == "gt"))  # type: ignore[arg-type]
        elif op in ("lt", "lte") and _is_number(value):
            bounds.append(("high", float(value), op == "lt"))  # type: ignore[arg-type]
        elif op == "between" and isinstance(value, list) and len(value) == 2 and all(map(_is_number, value)):
            bounds += [("low", float(value[0]), False), ("high", float(value[1]), False)]  # type: ignore[arg-type]
        elif op == "eq":
            if name in equal and equal[name][0] != value:
                raise ConditionProblem(
                    f"{path}.all[{index}]",
                    f"{name} eq {value!r} contradicts {path}.all[{equal[name][1]}] ({name} eq {equal[name][0]!r}): "
                    "this branch can never match",
                    "unreachable",
                )
            equal[name] = (value, index)
            if _is_number(value):
                bounds += [("low", float(value), False), ("high", float(value), False)]  # type: ignore[arg-type]
        for side, bound, strict in bounds:
            target = low if side == "low" else high
            current = target.get(name)
            tighter = current is None or (bound > current[0] if side == "low" else bound < current[0])
            if tighter or (current is not None and bound == current[0] and strict):
                target[name] = (bound, strict, index)
            if name in low and name in high:
                (lo, lo_strict, lo_at), (hi, hi_strict, hi_at) = low[name], high[name]
                if lo > hi or (lo == hi and (lo_strict or hi_strict)):
                    raise ConditionProblem(
                        f"{path}.all[{index}]",
                        f"{name} cannot be both {'>' if lo_strict else '>='} {lo:g} (all[{lo_at}]) and "
                        f"{'<' if hi_strict else '<='} {hi:g} (all[{hi_at}]): this branch can never match",
                        "unreachable",
                    )


MISSING: Final = object()
"""What :func:`reader` answers for an absent value (which makes a leaf unknown)."""


def reader(name: str) -> Callable[[Env], Any]:
    """A function reading ``name`` from an env; :data:`MISSING` when absent."""
    source, _, rest = name.partition(".")
    key, _, sub = rest.partition(".")
    if source == "product":
        return lambda env: getattr(env.product, key, MISSING)
    if source == "context":
        return lambda env: _none_missing(env.context.get(key, MISSING))

    if not sub:
        return lambda env: env.profile.get(key, MISSING)

    def read_sub(env: Env) -> Any:
        outer = env.profile.get(key, MISSING)
        return outer.get(sub, MISSING) if isinstance(outer, dict) else MISSING

    return read_sub


def _none_missing(value: Any) -> Any:
    return MISSING if value is None else value


def comparison(op: str) -> Callable[[Any, Any], bool]:
    """``op`` on (actual, expected); raises TypeError on values it cannot compare."""

    def number(value: Any) -> float:
        if not _is_number(value):
            raise TypeError(value)
        return value  # type: ignore[no-any-return]

    def listed(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise TypeError(value)
        return value

    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError(value)
        return value

    def same_kind(actual: Any, expected: Any) -> Any:
        if isinstance(actual, list | dict) or isinstance(actual, bool) != isinstance(expected, bool):
            raise TypeError(actual)
        return actual

    tests: dict[str, Callable[[Any, Any], bool]] = {
        "eq": lambda a, e: same_kind(a, e) == e,
        "ne": lambda a, e: same_kind(a, e) != e,
        "lt": lambda a, e: number(a) < e,
        "lte": lambda a, e: number(a) <= e,
        "gt": lambda a, e: number(a) > e,
        "gte": lambda a, e: number(a) >= e,
        "between": lambda a, e: e[0] <= number(a) <= e[1],
        "in": lambda a, e: same_kind(a, a) in listed(e),
        "not_in": lambda a, e: same_kind(a, a) not in listed(e),
        "contains": lambda a, e: (e in a) if isinstance(a, list) else (text(e) in text(a)),
        "contains_any": lambda a, e: any(item in listed(a) for item in listed(e)),
        "contains_all": lambda a, e: all(item in listed(a) for item in listed(e)),
        "starts_with": lambda a, e: text(a).startswith(text(e)),
        "ends_with": lambda a, e: text(a).endswith(text(e)),
    }
    return tests[op]


def _static_leaf(name: str, op: str, expected: Any) -> Evaluator:
    read, test = reader(name), comparison(op)
    if isinstance(expected, list) and op in ("in", "not_in"):
        expected = list(expected)
    source, _, rest = name.partition(".")
    key, _, sub = rest.partition(".")
    # The two common reads inline (what :func:`reader` answers, without a call per evaluation).
    if source == "profile" and not sub:

        def from_profile(env: Env) -> Tri:
            actual = env.profile.get(key, MISSING)
            if actual is MISSING:
                return None
            try:
                return bool(test(actual, expected))
            except TypeError:
                return None

        return from_profile
    if source == "context":

        def from_context(env: Env) -> Tri:
            actual = env.context.get(key)  # absent or None: unknown
            if actual is None:
                return None
            try:
                return bool(test(actual, expected))
            except TypeError:
                return None

        return from_context

    def evaluate(env: Env) -> Tri:
        actual = read(env)
        if actual is MISSING:
            return None
        try:
            return bool(test(actual, expected))
        except TypeError:
            return None

    return evaluate


def _dynamic_leaf(name: str, op: str, source: str) -> Evaluator:
    read, read_expected, test = reader(name), reader(source), comparison(op)

    def evaluate(env: Env) -> Tri:
        actual, expected = read(env), read_expected(env)
        if actual is MISSING or expected is MISSING:
            return None
        try:
            return bool(test(actual, expected))
        except TypeError:
            return None

    return evaluate
