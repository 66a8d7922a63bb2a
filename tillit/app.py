"""The one way every tillit process builds its Litestar application.

Same health endpoints, OpenAPI location, error mapping, body-size bound, database lifecycle and
migrations on start, whatever the component.
"""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec
from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.openapi import OpenAPIConfig
from litestar.types import ControllerRouterHandler
from litestar.utils.scope.state import ScopeState

from tillit.db import Database, provide_session
from tillit.keys import SERVICE_TOKEN_KEY, load_public_keys
from tillit.logs import configure_logging
from tillit.migrations import upgrade_to_head
from tillit.openapi import PreciseRenderPlugin, answer_options
from tillit.policy import Policy, load_policy
from tillit.policy_reload import PolicyCheck, PolicyReloader
from tillit.problems import InvalidRequest, Unavailable, UnsupportedMediaType, exception_handlers
from tillit.service_tokens import PROTECTED_PREFIX, ServiceTokenVerifier, authorization_of
from tillit.settings import Settings, load_settings

__all__ = ["Closable", "create_app", "create_internal_service", "decode_strictly", "postgres_state"]

StartupHook = Callable[[Litestar], Any]


class Closable(Protocol):
    async def close(self) -> None: ...


def postgres_state(key: str, build: Callable[[Database], Closable]) -> tuple[StartupHook, StartupHook]:
    """Start and stop hooks that put ``build(database)`` in the app state under ``key`` on PostgreSQL
    (nothing on SQLite) and close it before the database is; e.g. a service's batched reads."""

    def start(app: Litestar) -> None:
        database: Database = app.state.database
        if not database.is_sqlite:
            app.state[key] = build(database)

    async def stop(app: Litestar) -> None:
        built: Closable | None = app.state.get(key)
        if built is not None:
            await built.close()

    return start, stop


@get("/health/live", include_in_schema=False, sync_to_thread=False)
def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready", include_in_schema=False)
async def ready(state: State) -> Response[dict[str, str]]:
    database: Database | None = state.get("database")
    if database is not None:
        try:
            await database.ping()
        except Exception as exc:
            raise Unavailable(f"the database does not answer: {type(exc).__name__}") from exc
    return Response({"status": "ok"}, media_type=MediaType.JSON)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


_json_body_parameters: dict[int, tuple[Any, Any | None]] = {}
"""Per route handler, by id: (the handler, its JSON ``data`` parameter or None). The handler is kept
and compared, so an id reused after an app is gone (tests build many) never answers for another."""


def _json_body_parameter(request: Request[Any, Any, Any]) -> Any | None:
    """The handler's ``data`` parameter when it takes a JSON body on an API write, else ``None``.

    Writes without a body (``POST .../back``) need no content type; a handler that declares another
    body encoding (a form, as RFC 8058 one-click unsubscribe posts) has Litestar check it instead.
    """
    scope = request.scope
    if scope["method"] not in _BODY_METHODS or not scope["path"].startswith("/v1/"):
        return None
    handler = request.route_handler
    known = _json_body_parameters.get(id(handler))
    if known is None or known[0] is not handler:
        known = _json_body_parameters[id(handler)] = (handler, _declared_json_body(handler))
    return known[1]


def _declared_json_body(handler: Any) -> Any | None:
    parameter = handler.parsed_fn_signature.parameters.get("data")
    if parameter is None:
        return None
    body = parameter.kwarg_definition
    media_type = getattr(body, "media_type", RequestEncodingType.JSON)
    return parameter if media_type in (RequestEncodingType.JSON, MediaType.JSON) else None


def _content_type(scope: Any) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return ""


def require_json_body(request: Request[Any, Any, Any]) -> None:
    """API writes that take a body take JSON only; anything else is refused before it is read."""
    if _json_body_parameter(request) is None:
        return
    media_type = _content_type(request.scope).split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as application/json (got {media_type or 'no content type'})")


async def decode_body_strictly(request: Request[Any, Any, Any]) -> None:
    """Hold JSON bodies to their schema exactly.

    Litestar converts ``data`` leniently (``"1"`` becomes 1, 0 becomes 1970-01-01), which would accept
    requests the published schema forbids; the body is decoded strictly first and refused if it
    does not match.
    """
    parameter = _json_body_parameter(request)
    if parameter is None:
        return
    ScopeState.from_scope(request.scope).json = decode_strictly(await request.body(), parameter.annotation)


def decode_strictly(body: bytes, annotation: Any) -> Any:
    """``body`` decoded into ``annotation`` as its published schema says, else a 400 naming the problem.

    The value is handed to Litestar as the request's decoded JSON: converting a value that already
    has the handler's type passes it through, so the body is not decoded and converted twice.
    """
    try:
        # The typed decode is the fast path (a 24 KB decision body: 0.2 ms against 1.3 ms for the
        # general one); only a body it refuses takes the general path, which also counts 3.0 as 3.
        return msgspec.json.decode(body, type=annotation, strict=True)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        pass
    try:
        # Encoded again and decoded typed, not converted: msgspec cannot convert into a field kept as
        # raw JSON (``msgspec.Raw``, a decision's candidates), and this way such a field is the
        # caller's JSON with its whole-number floats as integers.
        document = _integral_floats_as_ints(msgspec.json.decode(body))
        return msgspec.json.decode(msgspec.json.encode(document), type=annotation, strict=True)
    except msgspec.DecodeError as exc:
        problem = f"body is not valid JSON: {exc}"
        raise InvalidRequest(problem, errors=[{"message": str(exc), "source": "body"}]) from exc
    except UnicodeDecodeError as exc:
        # msgspec checks a string's UTF-8 only when it makes a ``str`` of it, and then raises this.
        problem = f"body is not valid UTF-8: byte {exc.start} cannot start or continue a character"
        raise InvalidRequest(problem, errors=[{"message": problem, "source": "body"}]) from exc
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"body: {exc}", errors=[{"message": str(exc), "source": "body"}]) from exc
    except RecursionError as exc:
        # Bodies are bounded in bytes, not in depth: ``[[[[...`` within the limit still nests too deep.
        problem = "body: JSON nests too deeply"
        raise InvalidRequest(problem, errors=[{"message": problem, "source": "body"}]) from exc


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON Schema counts 3.0 as an integer; so does tillit."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    return value


def refuse_repeated_query(request: Request[Any, Any, Any]) -> None:
    """Each query parameter at most once, in every component: the schemas declare single values, and a
    repeated one would otherwise be read as one of its values silently (found by schemathesis)."""
    if b"&" not in request.scope["query_string"]:
        return
    params = request.query_params
    repeated = sorted({name for name, _value in params.multi_items() if len(params.getall(name)) > 1})
    if repeated:
        problem = f"query parameters given more than once: {', '.join(repeated)}"
        raise InvalidRequest(problem, errors=[{"message": problem, "source": "query"}])


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_QUERY: Final = re.compile(rb"[\x00-\x1f\x7f]|%(?:[01][0-9A-Fa-f]|7[Ff])")


def refuse_control_characters(request: Request[Any, Any, Any]) -> None:
    """No path or query value holds a control character: none of the published patterns admits one.

    Yet Python's ``$`` also matches before a final newline, so the pattern checks of path and query
    parameters took ``/v1/subjects/j%0A/consents`` and answered it 200 (found by schemathesis).
    """
    scope = request.scope
    if _CONTROL.search(scope["path"]):
        names = [name for name, value in request.path_params.items() if _CONTROL.search(str(value))]
        where = f"path parameter {', '.join(sorted(names))}" if names else "the path"
        problem = f"{where}: control characters are not allowed"
        raise InvalidRequest(problem, errors=[{"message": problem, "source": "path"}])
    if _CONTROL_IN_QUERY.search(scope["query_string"]):
        names = {name for name, value in request.query_params.multi_items() if _CONTROL.search(name + value)}
        where = f"query parameter {', '.join(sorted(names))}" if names else "the query"
        problem = f"{where}: control characters are not allowed"
        raise InvalidRequest(problem, errors=[{"message": problem, "source": "query"}])


async def before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    refuse_control_characters(request)
    refuse_repeated_query(request)
    require_json_body(request)
    await decode_body_strictly(request)
    return answer_options(request)


def _requiring_service_tokens(verifier: ServiceTokenVerifier) -> Callable[..., Any]:
    """``before_request`` preceded by the service-token check on every path under ``/v1/``.

    Done here rather than as a Litestar guard on each controller: a guard is called with a copy of
    its route handler, and that copy alone was a tenth of a profile read's CPU (py-spy); and here no
    controller of an internal service can be left unprotected by forgetting its guard.
    """

    async def check_then_before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
        scope = request.scope
        if scope["path"].startswith(PROTECTED_PREFIX):
            verifier.verify(authorization_of(scope))
        return await before_request(request)

    return check_then_before_request


def _settle_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    Modules, the policy, SQLAlchemy's and Litestar's tables make ~125,000 long-lived objects; a full
    collection walks all of them (~75 ms on these 2-core machines) and stops every request of the
    process meanwhile, which showed in the p99 tail. Frozen, they are never walked again; what
    requests allocate is collected as before.
    """
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings,
    *,
    title: str,
    description: str,
    route_handlers: Sequence[ControllerRouterHandler],
    migrations: Path | None = None,
    on_startup: Sequence[StartupHook] = (),
    on_shutdown: Sequence[StartupHook] = (),
    state: dict[str, Any] | None = None,
    policy_checks: Sequence[PolicyCheck] = (),
    service_tokens: ServiceTokenVerifier | None = None,
    **litestar_options: Any,
) -> Litestar:
    """Build a component app; with ``migrations`` it owns a database migrated on start.

    With ``service_tokens`` every path under ``/v1/`` answers 401 unless the request carries a
    service token that verifier accepts; the verifier is ``state.service_tokens`` (for a path that
    answers before Litestar, e.g. :mod:`services.rules.fast_decide`).

    With a ``policy`` in ``state`` the app reloads it when its files change or on SIGHUP, installing
    a new policy only when it validates and passes ``policy_checks``.
    """
    configure_logging(settings.component, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        database: Database | None = None
        if migrations is not None:
            database = Database(settings.database_url, settings.database_schema)
            await upgrade_to_head(database, migrations)
            app.state.database = database
        for hook in on_startup:
            result = hook(app)
            if hasattr(result, "__await__"):
                await result
        _settle_heap()
        reloader: PolicyReloader | None = None
        if app.state.get("policy") is not None:
            reloader = PolicyReloader(app, settings.policy_dir, policy_checks, settings.policy_reload_seconds)
            reloader.start()
        try:
            yield
        finally:
            if reloader is not None:
                await reloader.stop()
            for hook in on_shutdown:
                result = hook(app)
                if hasattr(result, "__await__"):
                    await result
            if database is not None:
                await database.dispose()

    app_state = {"settings": settings, **(state or {})}
    if service_tokens is not None:
        app_state["service_tokens"] = service_tokens
    return Litestar(
        route_handlers=[live, ready, *route_handlers],
        lifespan=[lifespan],
        dependencies={"session": Provide(provide_session)} if migrations is not None else {},
        exception_handlers=exception_handlers,
        before_request=_requiring_service_tokens(service_tokens) if service_tokens else before_request,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title=title,
            version="0.1.0",
            description=description,
            path="/schema",
            render_plugins=[PreciseRenderPlugin()],
        ),
        state=State(app_state),
        **litestar_options,
    )


def create_internal_service(
    component: str,
    *,
    title: str,
    description: str,
    route_handlers: Sequence[ControllerRouterHandler],
    migrations: Path,
    check_policy: Callable[[Policy], None] | None = None,
    state: Callable[[Settings], dict[str, Any]] | None = None,
    background: Callable[[Settings], tuple[StartupHook, StartupHook]] | None = None,
    on_startup: Sequence[StartupHook] = (),
    on_shutdown: Sequence[StartupHook] = (),
    policy_checks: Sequence[PolicyCheck] = (),
) -> Litestar:
    """An internal service: own database, the policy in ``state.policy``, gateway tokens required.

    ``state`` builds the service's own additions to the application state from its settings;
    ``background`` gives start and stop hooks of work the service runs beside its requests;
    ``on_startup`` hooks run once the database is migrated, before any request, ``on_shutdown``
    hooks after the last one, before the database is closed. A reloaded policy
    must pass ``check_policy`` and then ``policy_checks`` before it replaces the one in force.
    """
    settings = load_settings(component)
    policy = load_policy(settings.policy_dir)
    if check_policy is not None:
        check_policy(policy)
    verifier = ServiceTokenVerifier(load_public_keys(settings.keys_dir, SERVICE_TOKEN_KEY), audience=component)
    start, stop = background(settings) if background else (None, None)
    return create_app(
        settings,
        title=title,
        description=f"{description} Internal: callers need a gateway service token.",
        route_handlers=route_handlers,
        migrations=migrations,
        on_startup=[*on_startup, *([start] if start else [])],
        on_shutdown=[*([stop] if stop else []), *on_shutdown],
        state={"policy": policy, **(state(settings) if state else {})},
        policy_checks=[*([_as_reload_check(check_policy)] if check_policy else []), *policy_checks],
        service_tokens=verifier,
    )


def _as_reload_check(check: Callable[[Policy], None]) -> PolicyCheck:
    def reload_check(_: Litestar, policy: Policy) -> None:
        check(policy)

    return reload_check
