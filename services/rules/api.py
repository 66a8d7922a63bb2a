"""HTTP endpoints of the rules service (internal: only the gateway and operators' tools call them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from services.rules.catalogue import Catalogue, Category, Department, Product
from services.rules.definitions import KEY_PATTERN, SLOT_PATTERN, Definition
from services.rules.engine import Engine
from services.rules.fast_decide import DECIDE_BODY_BYTES, decide_batch
from services.rules.repository import DefinitionRepository, ExposureRepository
from services.rules.schemas import (
    MAX_BATCH_DECISIONS,
    MAX_CANDIDATES,
    CandidatesOnly,
    Decision,
    DecisionBatch,
    DecisionBatchAnswer,
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
from services.rules.service import ExposureService, PolicyReport, RulesService, current_engine
from tillit.db import provide_read_session
from tillit.patterns import exact
from tillit.problems import problem_responses
from tillit.types import PURPOSE_PATTERN

__all__ = ["CatalogueController", "DefinitionController", "ExperimentController", "SegmentController"]

SegmentKeyPath = Annotated[str, Parameter(pattern=exact(r"^[a-z][a-z0-9_-]{0,63}$"), description="A segment key")]
Kind = Literal["segment", "rule", "slot"]
_candidates_only = msgspec.json.Decoder(CandidatesOnly).decode


async def provide_current_engine(request: Request[Any, Any, Any]) -> Engine:
    """The compiled definitions, checked against the database at most once a second (see
    :func:`services.rules.service.current_engine`): evaluation never writes, and usually opens no
    session at all (making and closing one was ~15 % of a decision's CPU here)."""
    return await current_engine(request.app.state)


_READ = {"session": Provide(provide_read_session)}
"""Reads: no transaction, and on SQLite no turn in the writers' queue."""
_EVALUATE = {"engine": Provide(provide_current_engine)}


def provide_rules_service(session: AsyncSession, request: Request[Any, Any, Any]) -> RulesService:
    state = request.app.state
    return RulesService(DefinitionRepository(session), state.policy, state.engine)


class SegmentController(Controller):
    path = "/v1"
    tags = ["segments"]
    dependencies = {"rules": Provide(provide_rules_service, sync_to_thread=False)}

    @get("/segments", summary="Every segment (latest versions)", responses=problem_responses(401))
    async def list_segments(self, rules: RulesService) -> list[SegmentOut]:
        return await rules.list_segments()

    @post(
        "/segments",
        summary="Define a new segment (flat conditions or a when tree); refused if it reads a field it may not",
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def create_segment(self, data: SegmentIn, rules: RulesService) -> SegmentOut:
        return await rules.create_segment(data)

    @post(
        "/evaluate",
        status_code=HTTP_200_OK,
        summary="Segments an already-filtered profile falls into",
        dependencies=_EVALUATE,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def evaluate(self, data: EvaluationRequest, engine: Engine) -> Evaluation:
        return engine.evaluate(data)

    @post(
        "/decide",
        status_code=HTTP_200_OK,
        summary="The personalization decision for an already-filtered profile, a visit's context and candidates",
        description=(
            "Segments matched, the variant per requested slot, the candidate products (or the demo "
            f"catalogue's) after the merchandising rules, at most {MAX_CANDIDATES}, and the reasons. "
            "A list sent before can be named by its `candidates_digest` (SHA-256 of its exact JSON "
            "bytes) instead of sent again: with the list, the digest is checked (422 "
            "candidates-digest-mismatch) and the answer's `candidates_held` says whether the list is "
            "now held here; alone, the held list is used, or 409 candidates-unknown asks for the list "
            "again (never sent, dropped, or held by another replica only). Digests of product lists "
            "only: nothing personal is kept."
        ),
        dependencies=_EVALUATE,
        request_max_body_size=DECIDE_BODY_BYTES,
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def decide(self, data: DecisionRequest, engine: Engine, request: Request[Any, Any, Any]) -> Decision:
        if data.candidates_digest is None:
            return engine.decide(data)
        # The digest is of the candidates' bytes as sent: read them from the body (already read and
        # decoded whole before this handler; the last ``candidates`` counts, as in that decode).
        sent = _candidates_only(await request.body()).candidates
        return engine.decide(data, bytes(sent))

    @post(
        "/decide/batch",
        status_code=HTTP_200_OK,
        summary="Several personalization decisions in one request (the gateway's, under load)",
        description=(
            f"Up to {MAX_BATCH_DECISIONS} `POST /v1/decide` bodies; one result per body, in order: the "
            "decision that endpoint would answer, or `null` for a body only that endpoint can answer "
            "(one it refuses, or a `candidates_digest` not held here): sent there alone, it gets its own "
            "answer or problem. A whole batch that is not valid gets the problem here."
        ),
        dependencies=_EVALUATE,
        request_max_body_size=DECIDE_BODY_BYTES,
        responses=problem_responses(400, 401, 413, 415),
    )
    async def decide_batch(self, data: DecisionBatch, engine: Engine) -> DecisionBatchAnswer:
        return decide_batch(engine, data)

    @post(
        "/segments/{key:str}/match",
        status_code=HTTP_200_OK,
        summary="Which of up to 5000 already-filtered profiles the segment matches (audiences)",
        dependencies=_READ,
        request_max_body_size=8 * 1024 * 1024,
        responses=problem_responses(400, 401, 404, 413, 415, 422),
    )
    async def match(self, key: SegmentKeyPath, data: SegmentMatchRequest, rules: RulesService) -> SegmentMatch:
        return await rules.match(key, data)


class DefinitionController(Controller):
    path = "/v1"
    tags = ["definitions"]
    dependencies = {"rules": Provide(provide_rules_service, sync_to_thread=False)}

    @post(
        "/definitions",
        summary="Save a segment, merchandising rule or content slot as its key's next version",
        description=(
            "Checked against the release policy and the purpose's segments first: unknown fields, type "
            "errors, unreachable conditions and fields the purpose may not use are refused (422) naming "
            "the path in the definition (and the policy line). The same body as the latest version "
            "changes nothing and answers that version."
        ),
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def save(self, data: Definition, rules: RulesService) -> DefinitionOut:
        stored, _ = await rules.save(data)
        return stored

    @get(
        "/definitions",
        summary="The latest version of every definition; status=disabled lists those a policy change disabled",
        responses=problem_responses(400, 401, 422),
    )
    async def list_definitions(
        self,
        rules: RulesService,
        kind: Kind | None = None,
        purpose: Annotated[str | None, Parameter(pattern=PURPOSE_PATTERN, max_length=100)] = None,
        status: Literal["active", "disabled"] | None = None,
    ) -> list[DefinitionOut]:
        return await rules.list(kind, purpose, status)

    @get(
        "/definitions/{kind:str}/{key:str}",
        summary="One definition: its latest version, or the version asked for",
        responses=problem_responses(400, 401, 404),
    )
    async def get_definition(
        self,
        rules: RulesService,
        kind: Annotated[Kind, Parameter(description="segment, rule or slot")],
        key: Annotated[str, Parameter(pattern=SLOT_PATTERN, max_length=65)],
        version: Annotated[int | None, Parameter(ge=1, le=1_000_000)] = None,
    ) -> DefinitionOut:
        return await rules.get(kind, key, version)

    @post(
        "/policy-check",
        status_code=HTTP_200_OK,
        summary="Check every definition against the policy in force now (also done on every policy reload)",
        responses=problem_responses(401),
    )
    async def policy_check(self, rules: RulesService, request: Request[Any, Any, Any]) -> PolicyReport:
        return await rules.recheck(request.app.state.policy)


class ExperimentController(Controller):
    path = "/v1/experiments"
    tags = ["experiments"]

    @get(
        "/{key:str}/exposures",
        summary="How often each arm of an experiment was shown, per day (aggregates only)",
        responses=problem_responses(400, 401),
    )
    async def exposures(
        self,
        key: Annotated[str, Parameter(pattern=KEY_PATTERN, max_length=64)],
        session: AsyncSession,
        request: Request[Any, Any, Any],
    ) -> list[ExposureCount]:
        await request.app.state.exposures.flush(request.app.state.database)
        return await ExposureService(ExposureRepository(session)).for_experiment(key)


class CatalogueController(Controller):
    path = "/v1/catalogue"
    tags = ["catalogue"]

    @get(
        "/",
        summary="Products of the demo catalogue (generated; no personal data)",
        responses=problem_responses(400, 401),
    )
    async def products(
        self,
        request: Request[Any, Any, Any],
        department: Department | None = None,
        category: Category | None = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_CANDIDATES)] = 50,
    ) -> list[Product]:
        catalogue: Catalogue = request.app.state.catalogue
        return catalogue.candidates(department, category, limit)
