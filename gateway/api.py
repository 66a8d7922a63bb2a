"""The gateway's public HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import HeaderParameter, Parameter
from litestar.status_codes import HTTP_201_CREATED

from gateway.oauth import Caller, TokenService
from gateway.ratelimit import enforce_rate_limit
from gateway.repository import ReleaseAuditRepository
from gateway.schemas import CapturedConsent, ConsentConfirmation, OAuthError, ProfileRelease, TokenResponse
from gateway.service import GatewayService
from tillit.db import provide_session
from tillit.patterns import exact
from tillit.problems import problem_responses
from tillit.types import PURPOSE_PATTERN, SubjectIdPath

__all__ = [
    "ConsentController",
    "OAuthController",
    "SubjectController",
    "release_profile",
    "require_access_token",
]


async def require_access_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a valid access token from ``/oauth/token``, within its channel's rate limit (else 429).

    The caller is kept on the request state. A coroutine function so that Litestar calls it on the
    event loop, not in a worker thread.
    """
    tokens: TokenService = connection.app.state.tokens
    caller = tokens.verify(connection.headers.get("authorization"))
    enforce_rate_limit(connection.app.state, caller)
    connection.state.caller = caller


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    return request.state.caller


_request_session = asynccontextmanager(provide_session)


async def provide_gateway_service(request: Request[Any, Any, Any], caller: Caller) -> AsyncIterator[GatewayService]:
    """The service, over the request's own session (committed when the handler returns).

    It opens the session itself and takes ``caller`` although it does not use it, so that Litestar
    resolves ``caller`` and then this one after the other: independent providers at the same depth
    are started together in an anyio task group, which cost ~5% of the gateway's CPU per release
    (py-spy under ``bench.gateway``).
    """
    del caller
    state = request.app.state  # not a ``state`` parameter: Litestar copies the state for each one
    async with _request_session(request) as session:
        yield GatewayService(state.policy, state.upstream, ReleaseAuditRepository(session, state.get("audit_writer")))


async def release_profile(state: State, caller: Caller, subject_id: str, purpose: str) -> ProfileRelease:
    """One profile release, without a request session or Litestar's dependency injection.

    Its audit row goes through the group-commit writer and a refused attempt's row commits on its own,
    so no request session is opened: building one and Litestar resolving the providers were ~16 % of
    the gateway's CPU per release (py-spy under bench.gateway).
    """
    database = state.database
    audit = ReleaseAuditRepository(None, state.get("audit_writer"), bind=database.engine)
    return await GatewayService(state.policy, state.upstream, audit).release_profile(caller, subject_id, purpose)


@dataclass
class TokenOperation(Operation):
    """The token endpoint takes an RFC 6749 form that authlib parses, so the form is described here."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="client_secret_basic (HTTP Basic) or client_secret_post (client_id and client_secret here)",
            content={
                "application/x-www-form-urlencoded": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        required=["grant_type"],
                        properties={
                            "grant_type": Schema(type=OpenAPIType.STRING, enum=["client_credentials"]),
                            "scope": Schema(
                                type=OpenAPIType.STRING,
                                max_length=200,
                                description="space-separated scopes; by default every scope the client holds",
                            ),
                            "client_id": Schema(type=OpenAPIType.STRING, max_length=64),
                            "client_secret": Schema(type=OpenAPIType.STRING, max_length=200),
                        },
                    )
                )
            },
        )


GpcHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Sec-GPC",
        max_length=16,
        description="The shopper's Global Privacy Control signal, passed on: 1 refuses sale and sharing",
    ),
]

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=120,
        pattern=exact(r"^[!-~]+$"),
        description="Retry safely: the same key with the same request answers as the first time",
    ),
]

PurposeQuery = Annotated[
    str,
    Parameter(
        pattern=PURPOSE_PATTERN,
        min_length=1,
        max_length=100,
        description="The one purpose (a fideslang data use) the data is asked for.",
    ),
]


class OAuthController(Controller):
    path = "/"
    tags = ["oauth"]

    @post(
        "/oauth/token",
        summary="OAuth2 client credentials token endpoint (RFC 6749 §4.4); JWT access tokens per RFC 9068",
        status_code=200,
        operation_class=TokenOperation,
        responses={
            code: ResponseSpec(OAuthError, description=description, generate_examples=False)
            for code, description in (
                (400, "invalid_request, unsupported_grant_type or invalid_scope"),
                (401, "invalid_client: unknown client or wrong secret"),
            )
        },
    )
    async def token(self, request: Request[Any, Any, Any]) -> Response[TokenResponse]:
        tokens: TokenService = request.app.state.tokens
        return await tokens.token_response(request)

    @get("/.well-known/jwks.json", summary="Public keys that verify access tokens")
    async def jwks(self, state: State) -> dict[str, Any]:
        return state.access_token_jwks

    @get(
        "/.well-known/consent-receipt-keys.json",
        summary="Public keys that verify signed consent receipts offline (tillit receipt verify --jwks URL)",
    )
    async def receipt_keys(self, state: State) -> dict[str, Any]:
        return state.receipt_jwks


class SubjectController(Controller):
    path = "/v1/subjects/{subject_id:str}"
    tags = ["subjects"]
    guards = [require_access_token]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "gateway": Provide(provide_gateway_service),
    }

    @get(
        "/profile",
        summary="The subject's profile, filtered for one purpose by policy and consent",
        responses=problem_responses(400, 401, 403, 404, 422, 429, 503),
    )
    async def profile(
        self, request: Request[Any, Any, Any], subject_id: SubjectIdPath, purpose: PurposeQuery
    ) -> ProfileRelease:
        """The common form of this request is answered before Litestar sees it (gateway.fast_release);
        this handler answers the rest (and documents the endpoint)."""
        return await release_profile(request.app.state, request.state.caller, subject_id, purpose)

    @post(
        "/consents",
        status_code=HTTP_201_CREATED,
        summary="Record consent a channel captured itself",
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429, 503),
    )
    async def capture_consent(
        self,
        subject_id: SubjectIdPath,
        data: CapturedConsent,
        caller: Caller,
        gateway: GatewayService,
        sec_gpc: GpcHeader = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> dict[str, Any]:
        return await gateway.capture_consent(
            caller, subject_id, data, gpc=sec_gpc == "1", idempotency_key=idempotency_key
        )


class ConsentController(Controller):
    path = "/v1/consents"
    tags = ["consents"]
    guards = [require_access_token]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "gateway": Provide(provide_gateway_service),
    }

    @post(
        "/confirmations",
        status_code=HTTP_201_CREATED,
        summary="Double opt-in: hand back the token from the confirmation link; the consent starts to count",
        responses=problem_responses(400, 401, 403, 409, 413, 415, 422, 429, 503),
    )
    async def confirm(self, data: ConsentConfirmation, caller: Caller, gateway: GatewayService) -> dict[str, Any]:
        return await gateway.confirm_consent(caller, data)
