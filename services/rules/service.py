"""Saving, versioning and re-checking definitions; evaluating and deciding with them.

A save checks the definition against the policy in force and the enabled segments of its purpose
(:func:`services.rules.definitions.compile_definition`) and stores it as the key's next version;
saving what the latest version already says changes nothing. When the policy changes,
:meth:`RulesService.recheck` checks every latest version again: one that became invalid is
disabled with the reason (and logged), one that a policy change had disabled and that is valid
again is enabled. A disabled definition is never run, and neither is anything that references a
disabled segment (it is disabled too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final

import msgspec
from litestar.datastructures import State
from sqlalchemy.exc import IntegrityError

from services.rules.conditions import Condition, segment_references
from services.rules.definitions import (
    Definition,
    DefinitionRejected,
    SegmentDefinition,
    compile_definition,
)
from services.rules.engine import Engine, decode_definition
from services.rules.models import Definition as DefinitionRow
from services.rules.repository import DefinitionRepository, ExposureRepository
from services.rules.schemas import (
    Decision,
    DecisionRequest,
    DefinitionOut,
    Evaluation,
    EvaluationRequest,
    ExposureCount,
    SegmentIn,
    SegmentMatch,
    SegmentMatchRequest,
    SegmentOut,
)
from tillit.policy import Policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["ExposureService", "PolicyReport", "RulesService", "current_engine"]

_log = logging.getLogger("tillit.rules")


class PolicyReport(msgspec.Struct):
    """What a policy re-check changed: ``kind:key@version`` -> the reason, and those enabled again."""

    checked: int
    disabled: dict[str, str]
    enabled: list[str]


class RulesService:
    def __init__(
        self,
        repository: DefinitionRepository,
        policy: Policy,
        engine: Engine,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.policy = policy
        self.engine = engine
        self.clock = clock

    # -- definitions -------------------------------------------------------------------------

    async def _segment_refs(self, purpose: str) -> dict[str, list[str]]:
        rows = await self.repository.latest(kind="segment", purpose=purpose, status="active")
        return {row.key: segment_references(decode_definition(row.body).when) for row in rows}  # type: ignore[union-attr]

    async def save(self, definition: Definition, *, new_only: bool = False) -> tuple[DefinitionOut, bool]:
        """Check and store ``definition`` as its key's next version; (stored, whether it was new)."""
        kind = _kind(definition)
        segments = await self._segment_refs(definition.purpose)
        latest = await self.repository.latest_version(kind, definition.key)
        if latest is not None and new_only:
            raise Conflict(f"{kind} {definition.key!r} already exists", slug=f"{kind}-exists")
        if latest is not None and latest.purpose != definition.purpose:
            raise Conflict(
                f"{kind} {definition.key!r} is defined for purpose {latest.purpose!r}: a new version keeps it "
                "(define another key for another purpose)",
                slug="purpose-change",
            )
        compile_definition(definition, (latest.version + 1) if latest else 1, self.policy, segments)
        body = msgspec.to_builtins(definition)
        if latest is not None and latest.body == body and latest.status == "active":
            return _out(latest), False
        now = self.clock()
        row = DefinitionRow(
            kind=kind,
            key=definition.key,
            version=(latest.version + 1) if latest else 1,
            purpose=definition.purpose,
            title=definition.title,
            body=body,
            status="active",
            created_at=now,
            changed_at=now,
        )
        self.engine.invalidate()
        try:
            await self.repository.add(row)
        except IntegrityError as exc:
            raise Conflict(
                f"{kind} {definition.key!r} got a new version at the same moment; try again", slug="version-conflict"
            ) from exc
        return _out(row), True

    async def list(self, kind: str | None, purpose: str | None, status: str | None) -> list[DefinitionOut]:
        if purpose is not None and purpose not in self.policy.purposes:
            raise Unprocessable(f"purpose {purpose!r} is not declared in the policy", slug="unknown-purpose")
        return [_out(row) for row in await self.repository.latest(kind=kind, purpose=purpose, status=status)]

    async def get(self, kind: str, key: str, version: int | None) -> DefinitionOut:
        if version is None:
            row = await self.repository.latest_version(kind, key)
        else:
            row = await self.repository.version(kind, key, version)
        if row is None:
            which = f" version {version}" if version is not None else ""
            raise NotFound(f"no {kind} {key!r}{which} is defined", slug="definition-not-found")
        latest = await self.repository.latest_version(kind, key)
        return _out(row, latest=latest is not None and latest.id == row.id)

    async def recheck(self, policy: Policy) -> PolicyReport:
        """Check every latest version against ``policy``; disable what became invalid, enable what is valid again."""
        rows = await self.repository.latest()
        problems: dict[int, str] = {}
        by_purpose: dict[str, list[DefinitionRow]] = {}
        for row in rows:
            if row.status == "active" or row.disabled_by == "policy":
                by_purpose.setdefault(row.purpose, []).append(row)
        for group in by_purpose.values():
            problems.update(_problems(group, policy))
        report = PolicyReport(checked=sum(map(len, by_purpose.values())), disabled={}, enabled=[])
        self.engine.invalidate()
        now = self.clock()
        for group in by_purpose.values():
            for row in group:
                name = f"{row.kind}:{row.key}@{row.version}"
                problem = problems.get(row.id or 0)
                if problem is not None and (row.status == "active" or row.problem != problem):
                    if row.status == "active":
                        _log.warning("%s disabled: it no longer passes the policy: %s", name, problem)
                    report.disabled[name] = problem
                    await self.repository.set_status(row, "disabled", problem, "policy", now)
                elif problem is None and row.status == "disabled":
                    _log.info("%s enabled again: it passes the policy in force", name)
                    report.enabled.append(name)
                    await self.repository.set_status(row, "active", None, None, now)
        return report

    # -- the first segment API -----------------------------------------------------------------

    async def create_segment(self, segment: SegmentIn) -> SegmentOut:
        if (segment.conditions is None) == (segment.when is None):
            raise Unprocessable("give either conditions (all must hold) or when (a condition tree)", slug="bad-segment")
        when = segment.when
        if segment.conditions is not None:
            leaves = [
                Condition(field=f"profile.{c.field}", op=c.op, value=c.value)  # type: ignore[arg-type]
                for c in segment.conditions
            ]
            when = Condition(all=leaves)
        assert when is not None
        definition = SegmentDefinition(key=segment.key, title=segment.title, purpose=segment.purpose, when=when)
        stored, _ = await self.save(definition, new_only=True)
        return _segment_out(stored)

    async def list_segments(self) -> list[SegmentOut]:
        return [_segment_out(out) for out in await self.list("segment", None, None)]

    # -- evaluation ----------------------------------------------------------------------------

    async def current(self) -> Engine:
        """The engine, recompiled first if definitions or the policy changed since it was compiled."""
        if self.engine.fresh(self.policy):
            return self.engine
        generation = await self.repository.generation()
        if not self.engine.current(generation, self.policy):
            rows = await self.repository.latest(status="active")
            self.engine.install(generation, self.policy, list(rows))
        return self.engine

    async def evaluate(self, request: EvaluationRequest) -> Evaluation:
        return (await self.current()).evaluate(request)

    async def decide(self, request: DecisionRequest) -> Decision:
        """The decision for one visit: segments, a variant per requested slot, products, reasons."""
        return (await self.current()).decide(request)

    async def match(self, key: str, request: SegmentMatchRequest) -> SegmentMatch:
        """Which of many filtered profiles one segment matches (the gateway's ``segment=`` audiences).

        A segment answers only for the purpose it was defined under: its conditions were checked
        against that purpose's permitted fields, and the profiles were filtered for the one asked.
        There is no visit context: a segment that reads ``context.`` is unknown, so never matches.
        """
        row = await self.repository.latest_version("segment", key)
        if row is None:
            raise NotFound(f"no segment {key!r} is defined", slug="segment-not-found")
        if row.purpose != request.purpose:
            raise Unprocessable(
                f"segment {key!r} is defined for purpose {row.purpose!r}, not {request.purpose!r}",
                slug="segment-purpose-mismatch",
            )
        if row.status != "active":
            raise Unprocessable(f"segment {key!r} is disabled: {row.problem}", slug="segment-disabled")
        engine = await self.current()
        matched = [
            index
            for index, profile in enumerate(request.profiles)
            if engine.env(request.purpose, profile, {}).segment(key) is True
        ]
        return SegmentMatch(segment=key, matches=matched)


class ExposureService:
    def __init__(self, repository: ExposureRepository) -> None:
        self.repository = repository

    async def for_experiment(self, experiment: str) -> list[ExposureCount]:
        return [
            ExposureCount(experiment=row.experiment, arm=row.arm, day=row.day, count=row.count)
            for row in await self.repository.for_experiment(experiment)
        ]


def _problems(rows: Sequence[DefinitionRow], policy: Policy) -> dict[int, str]:
    """Why each of one purpose's definitions fails ``policy`` (segments first, to a fixed point)."""
    problems: dict[int, str] = {}
    decoded = {row.id or 0: (row, decode_definition(row.body)) for row in rows}
    segments = {row.key: segment_references(d.when) for row, d in decoded.values() if isinstance(d, SegmentDefinition)}
    changed = True
    while changed:
        changed = False
        for ident, (row, definition) in decoded.items():
            if not isinstance(definition, SegmentDefinition) or ident in problems:
                continue
            try:
                compile_definition(definition, row.version, policy, segments)
            except DefinitionRejected as exc:
                problems[ident] = exc.detail
                segments.pop(row.key, None)
                changed = True
    for ident, (row, definition) in decoded.items():
        if isinstance(definition, SegmentDefinition):
            continue
        try:
            compile_definition(definition, row.version, policy, segments)
        except DefinitionRejected as exc:
            problems[ident] = exc.detail
    return problems


def _kind(definition: Definition) -> str:
    return str(type(definition).__struct_config__.tag)


def _out(row: DefinitionRow, *, latest: bool = True) -> DefinitionOut:
    return DefinitionOut(
        kind=row.kind,
        key=row.key,
        version=row.version,
        purpose=row.purpose,
        title=row.title,
        status="active" if row.status == "active" else "disabled",
        definition=row.body,
        created_at=as_utc(row.created_at),
        latest=latest,
        problem=row.problem,
    )


def _segment_out(out: DefinitionOut) -> SegmentOut:
    return SegmentOut(
        key=out.key,
        title=out.title,
        purpose=out.purpose,
        when=msgspec.convert(out.definition["when"], Condition),
        version=out.version,
        status=out.status,
        created_at=out.created_at,
    )


_RECHECK_LOCK: Final = "rules_engine_recheck"


async def current_engine(state: State) -> Engine:
    """The app's engine for an evaluation, rechecked against the database first when it is not fresh.

    One evaluation at a time rechecks; the others that find it stale meanwhile wait for that one and
    then find it fresh, instead of each opening a session (under load a whole burst of decisions did,
    once a second, and left the fast path for the route's)."""
    engine: Engine = state.engine
    if engine.fresh(state.policy):
        return engine
    lock: asyncio.Lock | None = state.get(_RECHECK_LOCK)
    if lock is None:
        lock = asyncio.Lock()
        state[_RECHECK_LOCK] = lock
    async with lock:
        if engine.fresh(state.policy):
            return engine
        async with state.database.sessionmaker() as session:
            return await RulesService(DefinitionRepository(session), state.policy, engine).current()
