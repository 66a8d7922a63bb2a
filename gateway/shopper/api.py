"""The shopper API: what the preference center calls on a shopper's behalf.

- ``POST /v1/shopper/sessions`` exchanges a preference link for a short-lived shopper token.
- ``POST /v1/shopper/link-requests`` asks the shop to send a new link when the old one expired.
- ``/v1/me/*`` and ``GET /v1/quizzes`` take only a shopper token (``Authorization: Bearer``) and act
  on its subject alone; a channel's access token is refused there, and a shopper token everywhere else.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Final
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get, patch, post
from litestar.connection import ASGIConnection
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.api import GpcHeader
from gateway.shopper.schemas import (
    AnswerIn,
    ConsentChange,
    ConsentChangeOut,
    ConsentHistoryOut,
    LinkRequestAccepted,
    LinkTokenIn,
    MyConsents,
    MyExport,
    MyProfile,
    MyRequest,
    MyRequests,
    NewRequest,
    ProfileEdit,
    QuizList,
    QuizSessionList,
    QuizSessionView,
    ShopperSession,
    StartQuiz,
)
from gateway.shopper.service import Evidence, ShopperLimits, ShopperService
from gateway.shopper.tokens import Shopper, ShopperTokens
from tillit.db import provide_read_session
from tillit.patterns import exact
from tillit.policy import Language
from tillit.problems import problem_responses
from tillit.types import utcnow

__all__ = [
    "JOSE_MEDIA_TYPE",
    "MeController",
    "QuizCatalogueController",
    "ShopperSessionController",
    "evidence_from",
    "require_shopper_token",
]

JOSE_MEDIA_TYPE: Final = "application/jose"
_MAX_HEADER: Final = 2048

EventIdPath = Annotated[
    str,
    Parameter(pattern=exact(r"^[0-9a-f-]{36}$"), min_length=36, max_length=36, description="A consent event id (UUID)"),
]
LanguageQuery = Annotated[
    Language, Parameter(query="lang", description="Notice language; texts missing in it are shown in English")
]


async def require_shopper_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a valid shopper token (never a channel's access token), within the shopper's rate limit."""
    tokens: ShopperTokens = connection.app.state.shopper_tokens
    shopper = tokens.verify(connection.headers.get("authorization"))
    limits: ShopperLimits = connection.app.state.shopper_limits
    limits.check("me", shopper.subject_id)
    connection.state.shopper = shopper


def provide_shopper(request: Request[Any, Any, Any]) -> Shopper:
    return request.state.shopper


def _service(request: Request[Any, Any, Any], session: AsyncSession | None) -> ShopperService:
    state = request.app.state  # not a ``state`` parameter: Litestar copies the state for each one
    return ShopperService(
        policy=state.policy,
        upstream=state.upstream,
        tokens=state.shopper_tokens,
        link_keys=state.link_keys,
        limits=state.shopper_limits,
        session=session,
    )


def provide_shopper_service(request: Request[Any, Any, Any]) -> ShopperService:
    return _service(request, None)


def provide_my_shopper_service(request: Request[Any, Any, Any], shopper: Shopper) -> ShopperService:
    """The service for ``/v1/me``; it takes ``shopper`` (unused) so that Litestar resolves the two one
    after the other: independent providers at the same depth are started in an anyio task group."""
    del shopper
    return _service(request, None)


def provide_shopper_service_with_db(session: AsyncSession, request: Request[Any, Any, Any]) -> ShopperService:
    return _service(request, session)


def _truncated_ip(forwarded_for: str | None) -> str | None:
    """The client's address from ``X-Forwarded-For`` (its first entry), cut to /24 or /48 before it is kept."""
    if not forwarded_for:
        return None
    first = forwarded_for.split(",", 1)[0].strip()[:64]
    try:
        address = ipaddress.ip_address(first)
    except ValueError:
        return None
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


def evidence_from(request: Request[Any, Any, Any]) -> Evidence:
    """Consent evidence from what the preference center forwards: User-Agent, X-Forwarded-For, Referer."""
    headers = request.headers
    user_agent = (headers.get("user-agent") or "")[:512].strip() or None
    referer = headers.get("referer") or ""
    page = referer if referer.startswith(("https://", "http://")) and len(referer) <= _MAX_HEADER else None
    return Evidence(ip=_truncated_ip(headers.get("x-forwarded-for")), user_agent=user_agent, page=page)


_SERVICE = {"shopper_service": Provide(provide_shopper_service, sync_to_thread=False)}
_SERVICE_WITH_DB = {"shopper_service": Provide(provide_shopper_service_with_db, sync_to_thread=False)}
_READ_WITH_DB = {"session": Provide(provide_read_session), **_SERVICE_WITH_DB}


class ShopperSessionController(Controller):
    """Entry for a shopper holding a preference link: no other credential."""

    path = "/v1/shopper"
    tags = ["shopper"]

    @post(
        "/sessions",
        status_code=HTTP_201_CREATED,
        summary="Exchange a preference link for a short-lived shopper token",
        description=(
            "A tampered or foreign link is a 401 (link-invalid); an expired one a 410 (link-expired) whose "
            "new_link_available says whether POST /v1/shopper/link-requests can ask for a new one."
        ),
        dependencies=_SERVICE,
        sync_to_thread=False,
        responses=problem_responses(400, 401, 410, 413, 415, 429),
    )
    def open_session(self, data: LinkTokenIn, shopper_service: ShopperService) -> ShopperSession:
        return shopper_service.open_session(data.link_token)

    @post(
        "/link-requests",
        status_code=HTTP_202_ACCEPTED,
        summary="Ask for a new preference link with an expired one (the shop's channels are told by webhook)",
        description=(
            "Accepted for any link this gateway signed that expired less than 30 days ago (or is still valid); "
            "the answer says nothing about the shopper. Channels subscribed to preference_link.requested hear of it."
        ),
        dependencies=_SERVICE_WITH_DB,
        responses=problem_responses(400, 401, 410, 413, 415, 429),
    )
    async def request_link(self, data: LinkTokenIn, shopper_service: ShopperService) -> LinkRequestAccepted:
        return await shopper_service.request_link(data.link_token)


class QuizCatalogueController(Controller):
    path = "/v1/quizzes"
    tags = ["shopper"]
    guards = [require_shopper_token]
    dependencies = _SERVICE

    @get(
        summary="The quizzes a shopper can take: id, version, titles per locale",
        responses=problem_responses(401, 429, 503),
    )
    async def list_quizzes(self, shopper_service: ShopperService) -> QuizList:
        return await shopper_service.quizzes()


class MeController(Controller):
    """The shopper's own data; the subject is always the token's."""

    path = "/v1/me"
    tags = ["shopper"]
    guards = [require_shopper_token]
    dependencies = {
        "shopper": Provide(provide_shopper, sync_to_thread=False),
        "shopper_service": Provide(provide_my_shopper_service, sync_to_thread=False),
    }

    @get(
        "/profile",
        summary="Everything the preferences service holds for you, with provenance",
        responses=problem_responses(401, 429, 503),
    )
    async def profile(self, shopper: Shopper, shopper_service: ShopperService) -> MyProfile:
        return await shopper_service.profile(shopper)

    @patch(
        "/profile",
        summary="Change your preferences (source preference_page); null clears a field, absent leaves it",
        responses=problem_responses(400, 401, 413, 415, 422, 429, 503),
    )
    async def edit_profile(self, data: ProfileEdit, shopper: Shopper, shopper_service: ShopperService) -> MyProfile:
        return await shopper_service.edit_profile(shopper, data)

    @get(
        "/consents",
        summary="Each purpose with its current notice in your language and your consent state",
        responses=problem_responses(400, 401, 429, 503),
    )
    async def consents(
        self, shopper: Shopper, shopper_service: ShopperService, lang: LanguageQuery = "en"
    ) -> MyConsents:
        return await shopper_service.consents(shopper, lang)

    @get(
        "/consents/history",
        summary="Every consent event of yours, oldest first",
        responses=problem_responses(401, 429, 503),
    )
    async def consent_history(self, shopper: Shopper, shopper_service: ShopperService) -> ConsentHistoryOut:
        return await shopper_service.history(shopper)

    @post(
        "/consents",
        status_code=HTTP_201_CREATED,
        summary="Give or withdraw consent to one purpose; it counts at once (double opt-in purposes answer pending)",
        description=(
            "Evidence comes from the headers the preference center forwards: User-Agent, X-Forwarded-For "
            "(stored truncated), Referer (the page) and Sec-GPC. Giving names the notice_version shown: an "
            "outdated one is a 409 (notice-outdated). A double opt-in purpose stays pending; the channels "
            "registered for it get a consent.confirmation_requested webhook with the token to e-mail."
        ),
        dependencies=_SERVICE_WITH_DB,
        responses=problem_responses(400, 401, 409, 413, 415, 422, 429, 503),
    )
    async def change_consent(
        self,
        request: Request[Any, Any, Any],
        data: ConsentChange,
        shopper: Shopper,
        shopper_service: ShopperService,
        sec_gpc: GpcHeader = None,
    ) -> ConsentChangeOut:
        return await shopper_service.change_consent(shopper, data, evidence_from(request), gpc=sec_gpc == "1")

    @get(
        "/receipts/{event_id:str}",
        summary="The signed consent receipt (compact JWS) of one of your events, as a download",
        media_type=JOSE_MEDIA_TYPE,
        responses={
            HTTP_200_OK: ResponseSpec(
                str, description="Compact JWS (Kantara Consent Receipt v1.1)", media_type=JOSE_MEDIA_TYPE
            ),
            **problem_responses(400, 401, 404, 429, 503),
        },
    )
    async def receipt(
        self, event_id: EventIdPath, shopper: Shopper, shopper_service: ShopperService
    ) -> Response[bytes]:
        receipt = await shopper_service.receipt(shopper, event_id)
        return Response(
            receipt.encode(),
            media_type=JOSE_MEDIA_TYPE,
            headers={
                "Content-Disposition": f'attachment; filename="consent-receipt-{event_id}.jws"',
                "Cache-Control": "no-store",
            },
        )

    @post(
        "/quiz-sessions",
        status_code=HTTP_201_CREATED,
        summary="Start a quiz",
        responses=problem_responses(400, 401, 413, 415, 422, 429, 503),
    )
    async def start_quiz(self, data: StartQuiz, shopper: Shopper, shopper_service: ShopperService) -> QuizSessionView:
        return await shopper_service.start_quiz(shopper, data)

    @get(
        "/quiz-sessions",
        summary="Your quiz sessions that can be resumed now, latest first",
        responses=problem_responses(401, 429, 503),
    )
    async def quiz_sessions(self, shopper: Shopper, shopper_service: ShopperService) -> QuizSessionList:
        return await shopper_service.quiz_sessions(shopper)

    @get(
        "/quiz-sessions/{session_id:uuid}",
        summary="One of your quiz sessions: the current question in its locale, progress, whether you can go back",
        responses=problem_responses(400, 401, 404, 410, 429, 503),
    )
    async def quiz_session(
        self, session_id: UUID, shopper: Shopper, shopper_service: ShopperService
    ) -> QuizSessionView:
        return await shopper_service.quiz_session(shopper, str(session_id))

    @post(
        "/quiz-sessions/{session_id:uuid}/answers",
        status_code=HTTP_200_OK,
        summary="Answer the current question",
        responses=problem_responses(400, 401, 404, 409, 410, 413, 415, 422, 429, 503),
    )
    async def answer(
        self, session_id: UUID, data: AnswerIn, shopper: Shopper, shopper_service: ShopperService
    ) -> QuizSessionView:
        return await shopper_service.answer(shopper, str(session_id), data)

    @post(
        "/quiz-sessions/{session_id:uuid}/back",
        status_code=HTTP_200_OK,
        summary="Go back one question (no body)",
        responses=problem_responses(401, 404, 409, 410, 429, 503),
    )
    async def back(self, session_id: UUID, shopper: Shopper, shopper_service: ShopperService) -> QuizSessionView:
        return await shopper_service.back(shopper, str(session_id))

    @post(
        "/quiz-sessions/{session_id:uuid}/complete",
        status_code=HTTP_200_OK,
        summary="Complete the quiz: its traits join your profile (no body)",
        responses=problem_responses(401, 404, 409, 410, 429, 503),
    )
    async def complete(self, session_id: UUID, shopper: Shopper, shopper_service: ShopperService) -> QuizSessionView:
        return await shopper_service.complete(shopper, str(session_id))

    @get(
        "/requests",
        summary="Your data-subject requests with status and due date",
        responses=problem_responses(401, 429, 503),
    )
    async def requests(self, shopper: Shopper, shopper_service: ShopperService) -> MyRequests:
        return await shopper_service.requests(shopper)

    @post(
        "/requests",
        status_code=HTTP_201_CREATED,
        summary="Ask for erasure or for access to your data; one open request per type",
        responses=problem_responses(400, 401, 409, 413, 415, 422, 429, 503),
    )
    async def new_request(self, data: NewRequest, shopper: Shopper, shopper_service: ShopperService) -> MyRequest:
        return await shopper_service.new_request(shopper, data)

    @get(
        "/export",
        summary="Download your data as JSON: profile and its history, consents and their history, quizzes, recipients",
        dependencies=_READ_WITH_DB,
        responses=problem_responses(401, 429, 503),
    )
    async def export(self, shopper: Shopper, shopper_service: ShopperService) -> Response[MyExport]:
        export = await shopper_service.export(shopper)
        return Response(
            export,
            media_type=MediaType.JSON,
            headers={
                "Content-Disposition": f'attachment; filename="my-data-{utcnow():%Y-%m-%d}.json"',
                "Cache-Control": "no-store",
            },
        )
