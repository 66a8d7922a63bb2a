"""The preference center's Litestar application (``tillit serve preference_center``).

Server-rendered pages (Jinja2) that htmx enhances; every page also works without JavaScript. The
preference center holds no personal data and no database: the shopper's session is a sealed cookie
holding the gateway-issued shopper token, and every read or change goes to the gateway's shopper API.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Litestar, Request, Response
from litestar.config.compression import CompressionConfig
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.middleware import DefineMiddleware
from litestar.middleware.compression import CompressionMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from preference_center.assets import ASSET_FILES, STATIC_DIR, asset_version
from preference_center.controllers import (
    ConsentsController,
    DataController,
    LinkController,
    OverviewController,
    PreferencesController,
    QuizController,
)
from preference_center.gateway_client import GatewayClient, GatewayError, GatewayUnavailable, SessionEnded
from preference_center.i18n import install_i18n
from preference_center.security import SecurityHeadersMiddleware, SessionSealer, is_secure, load_session_key
from preference_center.web import NoSession, optional_session, render
from tillit.app import live, ready
from tillit.logs import configure_logging
from tillit.settings import Settings, load_settings

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "create_app"]

PACKAGE_DIR: Final = Path(__file__).parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
_STATIC_COMPRESSION: Final = CompressionConfig(backend="gzip", minimum_size=1024, gzip_compress_level=6)
logger = logging.getLogger("tillit.preference_center")


def _session_over(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    response = render(request, "session_over.html.j2", status_code=401)
    if isinstance(exc, SessionEnded):
        response.cookies.append(SessionSealer.removal(secure=is_secure(request)))
    return response


def _unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.warning("gateway unavailable: %s", exc)
    response = render(
        request, "error.html.j2", session=optional_session(request), status_code=503, problem="unavailable"
    )
    response.headers["retry-after"] = "30"
    return response


def _gateway_refused(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    status = exc.status if exc.status in (400, 403, 404, 409, 410, 413, 422, 429) else 400
    slug = "not-found" if status in (403, 404) else exc.slug
    return render(request, "error.html.j2", session=optional_session(request), status_code=status, problem=slug)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    problem = {403: "forbidden", 404: "not-found", 405: "not-allowed", 413: "too-large"}.get(status, "bad-request")
    if status >= 500:
        problem = "internal"
    response = render(request, "error.html.j2", session=optional_session(request), status_code=status, problem=problem)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("page failed: %s %s", request.method, request.url.path, exc_info=exc)
    return render(request, "error.html.j2", status_code=500, problem="internal")


def _template_engine() -> JinjaTemplateEngine:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    install_i18n(environment)
    environment.globals["asset_version"] = asset_version()
    for name in environment.list_templates(extensions=["j2"]):
        environment.get_template(name)  # compiled now, not on some shopper's first request
    return JinjaTemplateEngine.from_environment(environment)


def create_app(settings: Settings | None = None, gateway: GatewayClient | None = None) -> Litestar:
    """The app; ``gateway`` replaces the client of the configured gateway (tests)."""
    settings = settings or load_settings("preference_center")
    configure_logging(settings.component, settings.log_level)
    key = load_session_key(settings.keys_dir)
    gateway = gateway or GatewayClient(settings.url_of("gateway"), timeout=settings.upstream_timeout * 2)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await gateway.aclose()

    static = create_static_files_router(
        path="/static",
        directories=[STATIC_DIR, *ASSET_FILES],
        cache_control=CacheControlHeader(max_age=3600, public=True),
        include_in_schema=False,
        send_as_attachment=False,
        # Static files only: pages hold a CSRF token next to text from the query string, and
        # compressing those together would open them to BREACH-style guessing.
        middleware=[DefineMiddleware(CompressionMiddleware, config=_STATIC_COMPRESSION)],
    )
    return Litestar(
        route_handlers=[
            live,
            ready,
            static,
            OverviewController,
            LinkController,
            QuizController,
            PreferencesController,
            ConsentsController,
            DataController,
        ],
        lifespan=[lifespan],
        middleware=[DefineMiddleware(SecurityHeadersMiddleware)],
        csrf_config=CSRFConfig(
            secret=key.hex(),
            cookie_name="tillit_csrf",
            cookie_httponly=True,
            cookie_samesite="lax",
            exclude=["/static", "/health"],
        ),
        template_config=TemplateConfig(instance=_template_engine()),
        exception_handlers={
            NoSession: _session_over,
            SessionEnded: _session_over,
            GatewayUnavailable: _unavailable,
            GatewayError: _gateway_refused,
            NotFoundException: _http_error,
            HTTPException: _http_error,
            Exception: _internal,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        state=State({"settings": settings, "gateway": gateway, "sealer": SessionSealer(key)}),
    )
