"""Definitions as data — segments, merchandising rules, content slots — and their checks at save.

Each kind is one msgspec Struct, told apart by ``kind`` (the same shape in the API and in the YAML
files under ``services/rules/definitions/``). :func:`compile_definition` checks a definition
against the release policy and the segments already defined, and compiles it for evaluation:

- every ``profile.`` field must be a field or trait the policy declares, and its data category one
  that the definition's purpose may use: otherwise it is refused naming the field, and the policy
  file, line and key (``policies/release.yaml:93 purposes.personalize.content.profiled.may_use``);
- ``context.`` keys and ``product.`` attributes are the closed sets in :mod:`services.rules.conditions`;
- types must suit the operator, enum traits take only their declared values, contradictory leaves in
  one ``all`` and empty ``in`` lists are *unreachable*, and segment references must name an
  enabled segment of the same purpose without a cycle.

Every problem is a :class:`DefinitionRejected` (422) naming the path in the definition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec
import yaml

from services.rules.catalogue import ProductId
from services.rules.conditions import (
    CONTEXT_TYPES,
    PRODUCT_TYPES,
    Condition,
    ConditionProblem,
    Evaluator,
    FieldType,
    Scope,
    compile_condition,
    describe,
    segment_references,
)
from services.rules.selection import BitSelector, compile_bits
from tillit.patterns import exact
from tillit.policy import Policy
from tillit.problems import Unprocessable
from tillit.types import PurposeKey

__all__ = [
    "FIELD_TYPES",
    "KEY_PATTERN",
    "SLOT_PATTERN",
    "CompiledDefinition",
    "CompiledRule",
    "CompiledSegment",
    "CompiledSlot",
    "Definition",
    "DefinitionRejected",
    "Exclusion",
    "Experiment",
    "RuleDefinition",
    "SegmentDefinition",
    "SlotDefinition",
    "Title",
    "Variant",
    "compile_definition",
]

KEY_PATTERN: Final = exact(r"^[a-z][a-z0-9_-]{0,63}$")
SLOT_PATTERN: Final = exact(r"^[a-z][a-z0-9_-]{0,31}(\.[a-z][a-z0-9_-]{0,31})?$")
Key = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
SlotKey = Annotated[str, msgspec.Meta(pattern=SLOT_PATTERN, description="A content slot, e.g. home.hero")]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=exact(r"^[^\x00-\x1f\x7f]+$"))]
"""Printable: a title is stored as text, which cannot hold NUL on PostgreSQL."""
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

FIELD_TYPES: Final[dict[str, FieldType]] = {
    "email": "text",
    "phone": "text",
    "first_name": "text",
    "preferred_language": "text",
    "shoe_size": "number",
    "clothing_size": "text",
    "favourite_categories": "list",
    "favourite_brands": "list",
    "topics": "list",
    "sizes": "object",
    "price_range": "object",
    "contact_frequency": "object",
}
"""Value types of the policy's profile fields (traits carry their own); a field not listed is ``any``."""
_TRAIT_TYPES: Final[dict[str, FieldType]] = {"enum": "text", "list": "list", "number": "number", "text": "text"}


class SegmentDefinition(msgspec.Struct, tag="segment", tag_field="kind", forbid_unknown_fields=True):
    """Who a visit is: ``when`` over the profile, quiz traits, the context and other segments."""

    key: Key
    title: Title
    purpose: PurposeKey
    when: Condition


class Exclusion(msgspec.Struct, forbid_unknown_fields=True):
    """Products whose ``attribute`` takes two or more of ``values`` never appear in one list."""

    attribute: Literal["brand", "category"]
    values: Annotated[list[Text], msgspec.Meta(min_length=2, max_length=10)]


class RuleDefinition(msgspec.Struct, tag="rule", tag_field="kind", forbid_unknown_fields=True, omit_defaults=True):
    """A merchandising rule on the candidate products, applied when ``when`` holds (always without it).

    ``action``: ``filter`` hides the products ``match`` selects; ``boost`` / ``bury`` move them up /
    down by ``weight``; ``exclude`` keeps ``exclude.values`` apart (the first ranked wins); ``pin``
    puts ``pin`` products at ``position``; ``limit`` keeps at most ``limit`` products.
    """

    key: Key
    title: Title
    purpose: PurposeKey
    action: Literal["filter", "boost", "bury", "exclude", "pin", "limit"]
    priority: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    when: Condition | None = None
    match: Condition | None = None
    weight: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    exclude: Exclusion | None = None
    pin: Annotated[list[ProductId], msgspec.Meta(min_length=1, max_length=20)] | None = None
    position: Annotated[int, msgspec.Meta(ge=1, le=500)] = 1
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] | None = None


class Variant(msgspec.Struct, forbid_unknown_fields=True):
    """A variant shown to the visits ``when`` holds for."""

    key: Key
    when: Condition


class Experiment(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """An A/B test of the slot: ``arms`` (variant -> weight) split the visits outside ``holdout_percent``."""

    key: Key
    arms: Annotated[dict[Key, Annotated[int, msgspec.Meta(ge=1, le=100)]], msgspec.Meta(min_length=1, max_length=10)]
    holdout_percent: Annotated[int, msgspec.Meta(ge=0, le=90)] = 10
    when: Condition | None = None


class SlotDefinition(msgspec.Struct, tag="slot", tag_field="kind", forbid_unknown_fields=True, omit_defaults=True):
    """A content slot: the first variant whose ``when`` holds; else the experiment's arm; else ``default``."""

    key: SlotKey
    title: Title
    purpose: PurposeKey
    default: Key
    variants: Annotated[list[Variant], msgspec.Meta(max_length=20)] = msgspec.field(default_factory=list)
    experiment: Experiment | None = None


Definition = SegmentDefinition | RuleDefinition | SlotDefinition


class DefinitionRejected(Unprocessable):
    """A definition that may not be saved (or run): the message names the path and the problem."""

    def __init__(self, path: str, problem: str, slug: str = "invalid-definition") -> None:
        super().__init__(f"{path}: {problem}", slug=slug, errors=[{"path": path, "message": problem}])
        self.path = path


@dataclass
class CompiledSegment:
    key: str
    version: int
    when: Evaluator
    refs: list[str]


@dataclass
class CompiledRule:
    key: str
    version: int
    definition: RuleDefinition
    when: Evaluator | None
    select: BitSelector | None
    """The ``match`` over a whole candidate list (see :mod:`services.rules.selection`)."""
    why: str = ""
    """`` (applies: segment sale-seeker)`` for reasons; empty for a rule that always applies."""
    name: str = field(init=False)
    """``rule:KEY@VERSION``, as reasons name it."""

    def __post_init__(self) -> None:
        self.name = f"rule:{self.key}@{self.version}"


@dataclass
class CompiledSlot:
    key: str
    version: int
    definition: SlotDefinition
    variants: list[tuple[str, Evaluator, str]]
    """(variant, its condition, the condition in words)."""
    experiment_when: Evaluator | None = None


CompiledDefinition = CompiledSegment | CompiledRule | CompiledSlot


@functools.lru_cache(maxsize=64)
def _policy_lines(path: str, mtime_ns: int) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key in a policy file, by its key path."""
    del mtime_ns  # part of the cache key only
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = (*prefix, str(key.value))
                lines[name] = key.start_mark.line + 1
                walk(value, name)

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return lines
    if root is not None:
        walk(root, ())
    return lines


def policy_line(policy: Policy, purpose: str) -> str:
    """Where the purpose's ``may_use`` list is: ``policies/release.yaml:93 purposes.P.may_use``."""
    source = policy.origins.get(f"purposes.{purpose}", "")
    key = f"purposes.{purpose}.may_use"
    if not source:
        return key
    path = Path(source)
    try:
        line = _policy_lines(str(path), path.stat().st_mtime_ns).get(("purposes", purpose, "may_use"))
    except OSError:
        line = None
    shown = f"{path.parent.name}/{path.name}"
    return f"{shown}:{line} {key}" if line else f"{shown} {key}"


def _field_types(policy: Policy, purpose: str) -> Callable[[str], tuple[FieldType, tuple[str, ...]]]:
    allowed_categories = set(policy.purposes[purpose].may_use)

    def field_type(path: str) -> tuple[FieldType, tuple[str, ...]]:
        source, _, rest = path.partition(".")
        name, _, sub = rest.partition(".")
        if source == "context":
            if name not in CONTEXT_TYPES or sub:
                raise ConditionProblem(
                    "", f"{path} is not a context key ({', '.join(sorted(CONTEXT_TYPES))})", "unknown-field"
                )
            return CONTEXT_TYPES[name], ()
        if source == "product":
            if name not in PRODUCT_TYPES or sub:
                raise ConditionProblem(
                    "", f"{path} is not a product attribute ({', '.join(PRODUCT_TYPES)})", "unknown-field"
                )
            return PRODUCT_TYPES[name], ()
        declared = policy.fields.get(name) or policy.traits.get(name)
        if declared is None:
            raise ConditionProblem("", f"{name!r} is not a field or trait declared in the policy", "unknown-field")
        if declared.category not in allowed_categories:
            raise ConditionProblem(
                "",
                f"reads {name!r} ({declared.category}), which purpose {purpose!r} may not use "
                f"(policy {policy_line(policy, purpose)})",
                "field-not-permitted",
            )
        trait = policy.traits.get(name)
        if trait is not None:
            kind, values = _TRAIT_TYPES[trait.type], tuple(trait.values)
        else:
            kind, values = FIELD_TYPES.get(name, "any"), ()
        if sub:
            if kind not in ("object", "any"):
                raise ConditionProblem("", f"{name} is a {kind}, it has no key {sub!r}", "type-error")
            return "any", ()
        return kind, values

    return field_type


def compile_definition(
    definition: Definition,
    version: int,
    policy: Policy,
    segments: Mapping[str, list[str]],
) -> CompiledDefinition:
    """Check ``definition`` against ``policy`` and the enabled ``segments`` (key -> references) of
    its purpose, and compile it. Raises :class:`DefinitionRejected`."""
    if definition.purpose not in policy.purposes:
        raise DefinitionRejected(
            "purpose", f"purpose {definition.purpose!r} is not declared in the policy", "unknown-purpose"
        )
    field_type = _field_types(policy, definition.purpose)

    def exists(key: str) -> bool:
        return key in segments and not (isinstance(definition, SegmentDefinition) and key == definition.key)

    def condition(node: Condition, path: str, scope: Scope = "segment") -> Evaluator:
        try:
            return compile_condition(node, path, scope=scope, field_type=field_type, segment_exists=exists)
        except ConditionProblem as problem:
            raise DefinitionRejected(problem.path, problem.problem, problem.slug) from problem

    if isinstance(definition, SegmentDefinition):
        when = condition(definition.when, "when")
        refs = segment_references(definition.when)
        _check_no_cycle(definition.key, refs, segments)
        return CompiledSegment(definition.key, version, when, refs)
    if isinstance(definition, RuleDefinition):
        _check_rule_shape(definition)
        rule_when = condition(definition.when, "when") if definition.when else None
        select = None
        if definition.match is not None:
            condition(definition.match, "match", "product")  # the checks; the selector evaluates it
            select = compile_bits(definition.match)
        why = f" (applies: {describe(definition.when)})" if definition.when is not None else ""
        return CompiledRule(definition.key, version, definition, rule_when, select, why)
    names = [variant.key for variant in definition.variants]
    if len(set(names)) != len(names):
        raise DefinitionRejected("variants", "variant keys must be unique")
    known = {definition.default, *names}
    variants = [
        (variant.key, condition(variant.when, f"variants[{i}].when"), describe(variant.when))
        for i, variant in enumerate(definition.variants)
    ]
    experiment_when = None
    if definition.experiment is not None:
        if "holdout" in known or "holdout" in definition.experiment.arms:
            raise DefinitionRejected("experiment", "'holdout' names the holdout group: call the variant otherwise")
        if definition.experiment.when is not None:
            experiment_when = condition(definition.experiment.when, "experiment.when")
    return CompiledSlot(definition.key, version, definition, variants, experiment_when)


def _check_rule_shape(rule: RuleDefinition) -> None:
    needs = {
        "filter": "match",
        "boost": "match",
        "bury": "match",
        "exclude": "exclude",
        "pin": "pin",
        "limit": "limit",
    }
    wanted = needs[rule.action]
    if getattr(rule, wanted) is None:
        raise DefinitionRejected(wanted, f"a {rule.action} rule needs {wanted}")
    for other in set(needs.values()) - {wanted}:
        if getattr(rule, other) is not None:
            raise DefinitionRejected(other, f"a {rule.action} rule takes no {other}")
    if rule.exclude is not None and len(set(rule.exclude.values)) < 2:
        raise DefinitionRejected("exclude.values", "name at least two different values to keep apart")


def _check_no_cycle(key: str, refs: list[str], segments: Mapping[str, list[str]]) -> None:
    seen: set[str] = set()
    pending = list(refs)
    while pending:
        current = pending.pop()
        if current == key:
            raise DefinitionRejected("when", f"segment {key!r} refers to itself through {current!r}", "segment-cycle")
        if current in seen:
            continue
        seen.add(current)
        pending.extend(segments.get(current, []))
