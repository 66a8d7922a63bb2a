"""HTTP endpoints of the data-subject requests (internal: only the gateway calls them)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.requests.repository import RequestRepository
from services.consent.requests.schemas import (
    CURSOR_PATTERN,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    CreateRequest,
    ExtendRequest,
    RequestOut,
    RequestPage,
    RequestStatus,
    RequestType,
    TransitionRequest,
)
from services.consent.requests.service import RequestService
from tillit.problems import problem_responses
from tillit.types import SUBJECT_ID_PATTERN

__all__ = ["RequestController"]


def provide_request_service(session: AsyncSession, state: State) -> RequestService:
    return RequestService(RequestRepository(session), state.policy.purposes)


class RequestController(Controller):
    path = "/v1/requests"
    tags = ["gdpr requests"]
    dependencies = {"gdpr_requests": Provide(provide_request_service, sync_to_thread=False)}

    @post(
        "/",
        summary="Record a data-subject request (access, erasure, rectification, objection)",
        description="Due one calendar month after receipt (Art. 12(3) GDPR).",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def create_request(self, data: CreateRequest, gdpr_requests: RequestService) -> RequestOut:
        return await gdpr_requests.create(data)

    @get(
        "/",
        summary="Data-subject requests, newest first, with filters and a keyset cursor",
        responses=problem_responses(400, 401, 422),
    )
    async def list_requests(
        self,
        gdpr_requests: RequestService,
        status: Annotated[RequestStatus | None, Parameter(description="Only requests in this status")] = None,
        request_type: Annotated[RequestType | None, Parameter(query="type", description="Only this type")] = None,
        overdue: Annotated[
            bool | None, Parameter(description="true: only overdue requests; false: only those not overdue")
        ] = None,
        subject_id: Annotated[
            str | None, Parameter(pattern=SUBJECT_ID_PATTERN, max_length=64, description="Only this subject's")
        ] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = DEFAULT_PAGE_SIZE,
        cursor: Annotated[
            str | None,
            Parameter(pattern=CURSOR_PATTERN, max_length=200, description="next_cursor of the previous page"),
        ] = None,
    ) -> RequestPage:
        return await gdpr_requests.page(
            status=status,
            request_type=request_type,
            overdue=overdue,
            subject_id=subject_id,
            limit=limit,
            cursor=cursor,
        )

    @get(
        "/{request_id:uuid}",
        summary="One data-subject request with its history",
        responses=problem_responses(401, 404),
    )
    async def get_request(self, request_id: UUID, gdpr_requests: RequestService) -> RequestOut:
        return await gdpr_requests.get(str(request_id))

    @post(
        "/{request_id:uuid}/transitions",
        summary="Move a request along received, verified, in_progress, then completed or rejected",
        description="A rejection needs the reason in note. An illegal or concurrent transition is a 409.",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401, 404, 409, 413, 415, 422),
    )
    async def transition(self, request_id: UUID, data: TransitionRequest, gdpr_requests: RequestService) -> RequestOut:
        return await gdpr_requests.transition(str(request_id), data)

    @post(
        "/{request_id:uuid}/extension",
        summary="Extend the deadline once by one or two months, with the reason (Art. 12(3))",
        description="Only while the request is open and not yet due; a second extension is a 409.",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401, 404, 409, 413, 415),
    )
    async def extend(self, request_id: UUID, data: ExtendRequest, gdpr_requests: RequestService) -> RequestOut:
        return await gdpr_requests.extend(str(request_id), data)
