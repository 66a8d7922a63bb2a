"""RFC 9457 problem details: the one place where errors become HTTP answers.

Domain code raises a :class:`TillitError` subclass; Litestar's own validation and HTTP errors and
anything unexpected are mapped here too, so every error a client sees has a stable ``type``, a
human ``title`` and a ``detail`` that says what is wrong.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from asyncpg.exceptions import InsufficientResourcesError, OperatorInterventionError, PostgresConnectionError
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tillit.patterns import published

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Gone",
    "InvalidRequest",
    "NotFound",
    "Problem",
    "TillitError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "exception_handlers",
    "problem_responses",
    "problem_type",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_log = logging.getLogger("tillit.problems")


_DESCRIPTIONS = {
    400: "The request is malformed or fails validation",
    401: "No valid token",
    403: "The caller may not do this",
    404: "Nothing is held under this identifier",
    409: "Conflicts with what is already stored",
    410: "It existed but is gone or has expired",
    413: "The body is larger than allowed",
    415: "The body is not JSON",
    422: "Understood but not acceptable (e.g. an unknown purpose)",
    429: "Over the channel's rate limit; Retry-After says how many seconds to wait",
    503: "A dependency is unavailable; nothing was released or changed",
}


def problem_responses(*status_codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem details a handler can answer with."""
    return {
        code: ResponseSpec(
            data_container=Problem,
            description=_DESCRIPTIONS.get(code, "Problem details"),
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for code in status_codes
    }


def problem_type(slug: str) -> str:
    return f"urn:tillit:problem:{slug}"


class Problem(msgspec.Struct, omit_defaults=True):
    """The problem details body (RFC 9457 section 3)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class TillitError(Exception):
    """Base of every domain error; subclasses fix the status, slug and title."""

    status_code: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        slug: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions or {}
        """Extension members of the problem (RFC 9457 section 3.2), e.g. what the client may do next."""
        if slug:
            self.slug = slug


class BadRequest(TillitError):
    status_code = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidRequest(TillitError):
    """The request does not match the published schema."""

    status_code = 400
    slug = "validation"
    title = "The request is not valid"


class Unauthorized(TillitError):
    status_code = 401
    slug = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="tillit"'})
        super().__init__(detail, **kwargs)


class Forbidden(TillitError):
    status_code = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(TillitError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class Conflict(TillitError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"


class Unprocessable(TillitError):
    status_code = 422
    slug = "unprocessable"
    title = "Request understood but not acceptable"


class UnsupportedMediaType(TillitError):
    status_code = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class Gone(TillitError):
    status_code = 410
    slug = "gone"
    title = "Gone"


class TooManyRequests(TillitError):
    """Over a rate limit; give a ``Retry-After`` header."""

    status_code = 429
    slug = "rate-limited"
    title = "Too many requests"


class Unavailable(TillitError):
    status_code = 503
    slug = "unavailable"
    title = "A dependency is unavailable"


_HTTP_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def _respond(
    request: Request[Any, Any, Any],
    problem: Problem,
    headers: dict[str, str],
    extensions: dict[str, Any] | None = None,
) -> Response[Any]:
    problem.instance = request.url.path
    # Messages quote the patterns the server checks; the published documents hold them without the
    # lookahead that makes Python's ``$`` mean what ECMA's does (tillit.patterns).
    problem.detail = published(problem.detail)
    if problem.errors:
        problem.errors = [_published_error(error) for error in problem.errors]
    content: Any = problem
    if extensions:
        members = msgspec.to_builtins(problem)
        content = {**{k: v for k, v in extensions.items() if k not in members}, **members}
    return Response(
        content=content,
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _published_error(error: Any) -> Any:
    message = error.get("message") if isinstance(error, dict) else None
    return {**error, "message": published(message)} if isinstance(message, str) else error


def _tillit_error(request: Request[Any, Any, Any], exc: TillitError) -> Response[Any]:
    problem = Problem(
        type=problem_type(exc.slug),
        title=exc.title,
        status=exc.status_code,
        detail=exc.detail,
        errors=exc.errors,
    )
    return _respond(request, problem, exc.headers, exc.extensions)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    errors = exc.extra if isinstance(exc.extra, list) else None
    detail = exc.detail or "the request is not valid"
    if errors:
        detail = "; ".join(_describe(error) for error in errors)
    problem = Problem(
        type=problem_type("validation"),
        title="The request is not valid",
        status=400,
        detail=detail,
        errors=[e for e in errors if isinstance(e, dict)] if errors else None,
    )
    return _respond(request, problem, {})


def _describe(error: Any) -> str:
    if not isinstance(error, dict):
        return str(error)
    key, message, source = error.get("key"), error.get("message", "invalid"), error.get("source")
    where = f"{getattr(source, 'value', source)} " if source else ""
    return f"{where}{key}: {message}" if key else str(message)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    status = exc.status_code
    if status >= 500:
        return _unexpected(request, exc)
    slug, title = _HTTP_SLUGS.get(status, ("client-error", "Client error"))
    detail = exc.detail if exc.detail and exc.detail != title else title
    problem = Problem(type=problem_type(slug), title=title, status=status, detail=detail)
    return _respond(request, problem, dict(exc.headers or {}))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    _log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = Problem(
        type=problem_type("internal"),
        title="Internal error",
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        detail="the server could not complete the request; nothing was changed",
    )
    return _respond(request, problem, {})


def _database_error(request: Request[Any, Any, Any], exc: DBAPIError) -> Response[Problem]:
    """A dropped or unreachable database is a 503 the caller may retry; anything else stays a 500."""
    if not exc.connection_invalidated and not isinstance(exc, OperationalError | InterfaceError):
        return _unexpected(request, exc)
    return _database_unavailable(request, exc)


def _database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """Also the answer to asyncpg's own errors of that kind, raised by statements sent on bare pooled
    connections (:func:`tillit.db.bare_connection`): a connection the server dropped or shut down,
    a server refusing connections or out of them, a statement cancelled by the operator."""
    _log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    problem = Problem(
        type=problem_type("database-unavailable"),
        title="A dependency is unavailable",
        status=503,
        detail="the database could not be reached; nothing was changed, try again",
    )
    return _respond(request, problem, {"Retry-After": "1"})


exception_handlers: ExceptionHandlersMap = {
    TillitError: _tillit_error,
    DBAPIError: _database_error,
    PostgresConnectionError: _database_unavailable,
    OperatorInterventionError: _database_unavailable,
    InsufficientResourcesError: _database_unavailable,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
