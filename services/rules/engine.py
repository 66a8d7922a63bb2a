"""Evaluation: compiled definitions per purpose, and the decision for one visit.

Definitions are compiled once and kept per process; one tiny query at most every
:data:`RECHECK_SECONDS` (the change counter in ``rules_generation``) tells whether they are still
current, so a decision usually touches no database; a change made by this process or a policy
reload recompiles at once. A stored definition that no longer compiles under the policy in force is never
run (the policy re-check also disables it; see :mod:`services.rules.service`).

**A/B assignment.** The gateway sends ``assignment_key``, an HMAC of the subject id under a
gateway secret: stable per shopper, meaningless here. The bucket is
``SHA-256(experiment key, assignment key)`` modulo 10,000; the first ``holdout_percent`` of the
buckets are the holdout (shown the slot's default), the rest are split between the arms by
weight. Same shopper, same experiment: same arm, on every replica, without storing anything.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from services.rules.catalogue import Catalogue, Product
from services.rules.conditions import Env, Tri, segment_references
from services.rules.definitions import (
    CompiledRule,
    CompiledSegment,
    CompiledSlot,
    Definition,
    DefinitionRejected,
    SegmentDefinition,
    compile_definition,
)
from services.rules.exposures import ExposureCounter
from services.rules.merchandising import rank, rule_order
from services.rules.models import Definition as DefinitionRow
from services.rules.schemas import (
    CandidateList,
    Decision,
    DecisionContext,
    DecisionReason,
    DecisionRequest,
    Evaluation,
    EvaluationRequest,
    RawCandidatesDecisionRequest,
    check_candidate_ids,
)
from services.rules.selection import CandidateCache, Candidates
from tillit.policy import Policy
from tillit.problems import Conflict, Unprocessable

__all__ = [
    "BUCKETS",
    "CANDIDATES_UNKNOWN",
    "CATALOGUE_PAGE",
    "RECHECK_SECONDS",
    "CandidatesDigestMismatch",
    "CandidatesUnknown",
    "CompiledPurpose",
    "Engine",
    "bucket_of",
    "decode_definition",
]

BUCKETS: Final = 10_000
CATALOGUE_PAGE: Final = 24
"""Products answered from the demo catalogue when the request names no limit."""
RECHECK_SECONDS: Final = 1.0
"""How stale another replica's definition change may be here: the change counter is read at most
this often (a change made by this process, or a new policy, is seen at once)."""
_log = logging.getLogger("tillit.rules")
CANDIDATES_UNKNOWN: Final = "candidates-unknown"


class CandidatesUnknown(Conflict):
    """A ``candidates_digest`` alone, and no table held for it here: the caller resends the list."""

    slug = CANDIDATES_UNKNOWN
    title = "Candidate list not held"


class CandidatesDigestMismatch(Unprocessable):
    """A ``candidates_digest`` that is not the SHA-256 of the ``candidates`` sent with it: 422, not
    400, since the body matches the published schema (tests/schemathesis.toml's convention)."""

    slug = "candidates-digest-mismatch"
    title = "The candidates are not those of the digest"


def decode_definition(body: Mapping[str, Any]) -> Definition:
    return msgspec.convert(body, Definition)  # type: ignore[arg-type]


def bucket_of(experiment: str, assignment_key: str) -> int:
    digest = hashlib.sha256(f"{experiment}\x00{assignment_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


@dataclass
class CompiledPurpose:
    segments: dict[str, CompiledSegment] = field(default_factory=dict)
    rules: list[CompiledRule] = field(default_factory=list)
    """In the order they run (:func:`~services.rules.merchandising.rule_order`)."""
    slots: dict[str, CompiledSlot] = field(default_factory=dict)
    evaluation_order: list[CompiledSegment] | None = field(default_factory=list)
    """Every segment after those it refers to, so that a visit's are evaluated in one pass; None
    when they refer to each other in a cycle (refused at save), which only the lazy walk of
    :meth:`Engine.env` answers as before."""


def _evaluation_order(segments: Mapping[str, CompiledSegment]) -> list[CompiledSegment] | None:
    """The segments, each after those it refers to (depth first); None if they refer in a cycle."""
    order: list[CompiledSegment] = []
    state: dict[str, bool] = {}  # False: being visited, True: placed

    def place(segment: CompiledSegment) -> bool:
        state[segment.key] = False
        for ref in segment.refs:
            found = segments.get(ref)
            if found is None or state.get(ref) is True:
                continue
            if ref in state or not place(found):
                return False
        state[segment.key] = True
        order.append(segment)
        return True

    for segment in segments.values():
        if segment.key not in state and not place(segment):
            return None
    return order


def compile_purpose(rows: list[DefinitionRow], policy: Policy) -> CompiledPurpose:
    """Compile the active definitions of one purpose; one that no longer compiles is left out (logged)."""
    compiled = CompiledPurpose()
    decoded = [(row, decode_definition(row.body)) for row in rows if row.status == "active"]
    segments = {d.key: segment_references(d.when) for _, d in decoded if isinstance(d, SegmentDefinition)}
    for row, definition in sorted(decoded, key=lambda pair: pair[0].kind != "segment"):
        try:
            result = compile_definition(definition, row.version, policy, segments)
        except DefinitionRejected as exc:
            _log.warning("%s %s@%s is not run: %s", row.kind, row.key, row.version, exc.detail)
            if row.kind == "segment":
                segments.pop(row.key, None)
            continue
        if isinstance(result, CompiledSegment):
            compiled.segments[result.key] = result
        elif isinstance(result, CompiledRule):
            compiled.rules.append(result)
        else:
            compiled.slots[result.key] = result
    compiled.rules.sort(key=rule_order)
    compiled.evaluation_order = _evaluation_order(compiled.segments)
    return compiled


class Engine:
    """Compiled definitions of every purpose, rebuilt when definitions or the policy change."""

    def __init__(self, catalogue: Catalogue, exposures: ExposureCounter) -> None:
        self.catalogue = catalogue
        self.exposures = exposures
        self._version: tuple[int, int] | None = None
        self._checked_at = -math.inf
        self._purposes: dict[str, CompiledPurpose] = {}
        self.candidate_tables = CandidateCache()
        """Tables of candidate lists sent before, by their JSON or their digest (see
        :meth:`candidate_table` and :meth:`digest_table`)."""

    def fresh(self, policy: Policy) -> bool:
        """Compiled for ``policy`` and checked against the database less than :data:`RECHECK_SECONDS` ago."""
        return (
            self._version is not None
            and self._version[1] == id(policy)
            and time.monotonic() - self._checked_at < RECHECK_SECONDS
        )

    def current(self, generation: int, policy: Policy) -> bool:
        if self._version != (generation, id(policy)):
            return False
        self._checked_at = time.monotonic()
        return True

    def invalidate(self) -> None:
        """This process changed definitions: look at the database on the next evaluation."""
        self._checked_at = -math.inf

    def install(self, generation: int, policy: Policy, rows: list[DefinitionRow]) -> None:
        by_purpose: dict[str, list[DefinitionRow]] = {}
        for row in rows:
            by_purpose.setdefault(row.purpose, []).append(row)
        self._purposes = {purpose: compile_purpose(group, policy) for purpose, group in by_purpose.items()}
        self.candidate_tables.clear()  # their memoized selections are of the definitions replaced
        self._version = (generation, id(policy))
        self._checked_at = time.monotonic()

    def purpose(self, purpose: str) -> CompiledPurpose:
        return self._purposes.get(purpose) or CompiledPurpose()

    def env(self, purpose: str, profile: Mapping[str, Any], context: Mapping[str, Any]) -> Env:
        """A visit's env; its ``segment`` evaluates a segment of ``purpose`` once (memoized)."""
        compiled = self.purpose(purpose)
        results: dict[str, Tri] = {}
        env = Env(profile, context)

        def segment(key: str) -> Tri:
            if key in results:
                return results[key]
            found = compiled.segments.get(key)
            if found is None:
                return None
            results[key] = None  # a cycle (refused at save) would read unknown
            results[key] = found.when(env)
            return results[key]

        env.segment = segment
        return env

    def segments(self, purpose: str, profile: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[list[str], Env]:
        """The segments a visit is in (only *true* matches), and its env.

        Every segment is evaluated here anyway, so in :attr:`CompiledPurpose.evaluation_order`, in
        one pass: the env's ``segment`` is then the results' ``get`` (a segment not defined is
        unknown, None), not a Python call per reference.
        """
        compiled = self.purpose(purpose)
        if compiled.evaluation_order is None:
            env = self.env(purpose, profile, context)
            return [key for key in compiled.segments if env.segment(key) is True], env
        results: dict[str, Tri] = {}
        env = Env(profile, context, results.get)
        for segment in compiled.evaluation_order:
            results[segment.key] = segment.when(env)
        return [key for key in compiled.segments if results[key] is True], env

    def evaluate(self, request: EvaluationRequest) -> Evaluation:
        """The segments an already-filtered profile falls into (no visit context)."""
        matched, _ = self.segments(request.purpose, request.profile, {})
        return Evaluation(purpose=request.purpose, segments=matched)

    def decide(self, request: DecisionRequest, candidates_json: bytes | None = None) -> Decision:
        """The decision on a request the route decoded; ``candidates_json``: the JSON its candidates
        were decoded from, needed (and then given) only when it names a ``candidates_digest``."""
        digest = request.candidates_digest
        if digest is None:
            return self.decide_on(request, request.candidates)
        table, held = self.digest_table(msgspec.Raw(candidates_json or b"null"), digest, request.candidates)
        return self.decide_on(request, table, held)

    def candidate_table(self, candidates: msgspec.Raw) -> Candidates | None:
        """The table of a request's candidates sent as JSON (None for ``null``): from
        :attr:`candidate_tables` when this JSON was decoded before, else decoded and kept there.

        Raises what decoding them in a :class:`DecisionRequest` raises (``msgspec.ValidationError``,
        ``msgspec.DecodeError``, ``ValueError`` for an id), so that such a request can be refused
        exactly as that would refuse it.
        """
        key = bytes(candidates)
        if key == b"null":
            return None
        table = self.candidate_tables.get(key)
        if table is None:
            products = msgspec.json.decode(key, type=CandidateList, strict=True)
            if products:
                check_candidate_ids(products)
            table = Candidates(products)
            self.candidate_tables.put(key, table)
        return table

    def digest_table(
        self, candidates: msgspec.Raw, digest: str, decoded: list[Product] | None = None
    ) -> tuple[Candidates, bool]:
        """The table of a request with a ``candidates_digest``, and whether it is held for the digest now.

        With the candidates' JSON (``candidates`` not ``null``): its SHA-256 must be ``digest``
        (:class:`CandidatesDigestMismatch` otherwise); the table held for the digest, else the JSON
        decoded (``decoded`` when the route already did, else as :meth:`candidate_table` decodes
        it, raising what that raises) and offered to :attr:`candidate_tables` under the digest.
        Without them: the table held for the digest, else :class:`CandidatesUnknown` (409).
        """
        sent = bytes(candidates)
        if sent == b"null":
            table = self.candidate_tables.get(digest)
            if table is None:
                raise CandidatesUnknown(
                    "no candidate list with this candidates_digest is held here (never sent, dropped, or "
                    "sent to another replica): send the list in candidates again, with its digest"
                )
            return table, True
        actual = hashlib.sha256(sent).hexdigest()
        if actual != digest:
            raise CandidatesDigestMismatch(
                f"candidates_digest {digest} is not the SHA-256 of the candidates sent, which is {actual}"
            )
        table = self.candidate_tables.get(digest)
        if table is not None:
            return table, True
        if decoded is None:
            decoded = msgspec.json.decode(sent, type=CandidateList, strict=True)
            if decoded:
                check_candidate_ids(decoded)
        table = Candidates(decoded)
        return table, self.candidate_tables.put(digest, table, len(sent))

    def decide_on(
        self,
        request: DecisionRequest | RawCandidatesDecisionRequest,
        candidates: list[Product] | Candidates | None,
        held: bool | None = None,
    ) -> Decision:
        """The decision on ``request`` for ``candidates`` (the request's; None: the demo catalogue's);
        ``held``: whether the table is held for the request's ``candidates_digest`` (None: it named none)."""
        context = _context(request.context, self.catalogue)
        matched, env = self.segments(request.purpose, request.profile, context)
        compiled = self.purpose(request.purpose)
        reasons: list[DecisionReason] = []
        variants: dict[str, str] = {}
        for slot_key in request.context.slots:
            slot = compiled.slots.get(slot_key)
            if slot is not None:
                variants[slot_key] = self._variant(slot, env, request.assignment_key, reasons)
        limit = request.limit
        if candidates is None:
            candidates = self.catalogue.candidates(request.context.department, request.context.category)
            limit = limit or CATALOGUE_PAGE
        table = candidates if isinstance(candidates, Candidates) else Candidates(candidates)
        shown, product_reasons = rank(table, compiled.rules, env, limit)
        reasons.extend(product_reasons)
        ids = table.column("id")
        return Decision(
            purpose=request.purpose,
            segments=matched,
            variants=variants,
            products=list(map(ids.__getitem__, shown)),
            reasons=reasons,
            candidates_held=held,
        )

    def _variant(self, slot: CompiledSlot, env: Env, assignment_key: str | None, reasons: list[DecisionReason]) -> str:
        name = f"slot:{slot.key}@{slot.version}"
        for variant, when, why in slot.variants:
            if when(env) is True:
                reasons.append(DecisionReason(name, f"variant {variant}: {why}"))
                return variant
        experiment = slot.definition.experiment
        if (
            experiment is not None
            and assignment_key is not None
            and (slot.experiment_when is None or slot.experiment_when(env) is True)
        ):
            bucket = bucket_of(experiment.key, assignment_key)
            arm = _arm(bucket, experiment.holdout_percent, experiment.arms)
            self.exposures.count(experiment.key, arm or "holdout")
            chosen = arm or slot.definition.default
            where = "holdout" if arm is None else f"arm {arm}"
            reasons.append(
                DecisionReason(
                    name, f"variant {chosen}: experiment {experiment.key}, bucket {bucket} of {BUCKETS} ({where})"
                )
            )
            return chosen
        reasons.append(DecisionReason(name, f"variant {slot.definition.default}: the default"))
        return slot.definition.default


def _arm(bucket: int, holdout_percent: int, arms: Mapping[str, int]) -> str | None:
    """The arm of ``bucket``; None in the holdout."""
    holdout = holdout_percent * BUCKETS // 100
    if bucket < holdout:
        return None
    total = sum(arms.values())
    position = (bucket - holdout) * total // (BUCKETS - holdout)
    for arm, weight in arms.items():
        if position < weight:
            return arm
        position -= weight
    return next(reversed(list(arms)))


def _context(context: DecisionContext, catalogue: Catalogue) -> dict[str, Any]:
    """The visit context rules read; the brand of the product on screen comes from the catalogue if not given."""
    values = {name: getattr(context, name) for name in context.__struct_fields__ if name != "slots"}
    if values.get("product_brand") is None and context.product_id is not None:
        product = catalogue.by_id.get(context.product_id)
        if product is not None:
            values["product_brand"] = product.brand
    return values
