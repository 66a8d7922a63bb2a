"""HTTP endpoints of the rules service (internal: only the gateway calls them)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from services.rules.repository import SegmentRepository
from services.rules.schemas import (
    Decision,
    DecisionRequest,
    Evaluation,
    EvaluationRequest,
    SegmentIn,
    SegmentMatch,
    SegmentMatchRequest,
    SegmentOut,
)
from services.rules.service import SegmentService
from tillit.problems import problem_responses
from tillit.service_tokens import require_service_token

__all__ = ["SegmentController"]

SegmentKeyPath = Annotated[str, Parameter(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="A segment key")]


def provide_segment_service(session: AsyncSession, state: State) -> SegmentService:
    return SegmentService(SegmentRepository(session), state.policy)


class SegmentController(Controller):
    path = "/v1"
    tags = ["segments"]
    guards = [require_service_token]
    dependencies = {"segments": Provide(provide_segment_service, sync_to_thread=False)}

    @get("/segments", summary="Every segment definition", responses=problem_responses(401))
    async def list_segments(self, segments: SegmentService) -> list[SegmentOut]:
        return await segments.list()

    @post(
        "/segments",
        summary="Define a segment; refused if it reads a field its purpose may not use",
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def create_segment(self, data: SegmentIn, segments: SegmentService) -> SegmentOut:
        return await segments.create(data)

    @post(
        "/evaluate",
        status_code=HTTP_200_OK,
        summary="Segments an already-filtered profile falls into",
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def evaluate(self, data: EvaluationRequest, segments: SegmentService) -> Evaluation:
        return await segments.evaluate(data)

    @post(
        "/decide",
        status_code=HTTP_200_OK,
        summary="The personalization decision for an already-filtered profile and a visit's context",
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def decide(self, data: DecisionRequest, segments: SegmentService) -> Decision:
        return await segments.decide(data)

    @post(
        "/segments/{key:str}/match",
        status_code=HTTP_200_OK,
        summary="Which of up to 5000 already-filtered profiles the segment matches (audiences)",
        request_max_body_size=8 * 1024 * 1024,
        responses=problem_responses(400, 401, 404, 413, 415, 422),
    )
    async def match(self, key: SegmentKeyPath, data: SegmentMatchRequest, segments: SegmentService) -> SegmentMatch:
        return await segments.match(key, data)
