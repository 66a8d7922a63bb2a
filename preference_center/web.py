"""What every page handler shares: the shopper's session, the language, rendering and redirects."""

from __future__ import annotations

from typing import Any, Final

from litestar import Request
from litestar.datastructures import State
from litestar.response import Redirect, Template

from preference_center.gateway_client import GatewayClient
from preference_center.i18n import DEFAULT_LANGUAGE, LANGUAGE_NAMES, LANGUAGES, catalog, negotiate
from preference_center.labels import N_
from preference_center.security import SESSION_COOKIE, Session, SessionSealer

__all__ = [
    "LANG_COOKIE",
    "NAVIGATION",
    "NoSession",
    "gateway_of",
    "is_htmx",
    "language_of",
    "optional_session",
    "provide_session",
    "render",
    "safe_next",
    "see_other",
]

LANG_COOKIE: Final = "tillit_lang"
NAVIGATION: Final = (
    ("/", N_("Overview")),
    ("/quiz", N_("Style quiz")),
    ("/preferences", N_("Preferences")),
    ("/consents", N_("Consents")),
    ("/data", N_("My data")),
)


class NoSession(Exception):
    """No valid session cookie: the shopper must open their link again."""


def gateway_of(state: State) -> GatewayClient:
    client: GatewayClient = state.gateway
    return client


def optional_session(request: Request[Any, Any, Any]) -> Session | None:
    sealer: SessionSealer = request.app.state.sealer
    return sealer.open(request.cookies.get(SESSION_COOKIE))


async def provide_session(request: Request[Any, Any, Any]) -> Session:
    session = optional_session(request)
    if session is None:
        raise NoSession
    return session


def language_of(request: Request[Any, Any, Any], session: Session | None = None) -> str:
    """The session's language (from the profile or a switch), else a chosen one, else Accept-Language."""
    if session is not None and session.lang in LANGUAGES:
        return session.lang
    chosen = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return str(chosen)
    return negotiate(request.headers.get("accept-language"))


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def safe_next(value: Any, default: str = "/") -> str:
    """A local path to go back to; anything else (other hosts, ``//``, schemes) is the default."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if len(value) > 512 or any(ord(character) < 32 for character in value):
        return default
    return value


def see_other(path: str) -> Redirect:
    return Redirect(path=path, status_code=303)


def render(
    request: Request[Any, Any, Any],
    template: str,
    *,
    session: Session | None = None,
    status_code: int = 200,
    lang: str | None = None,
    **context: Any,
) -> Template:
    language = lang or language_of(request, session)
    return Template(
        template_name=template,
        status_code=status_code,
        context={
            "lang": language,
            "t": catalog(language),
            "path": request.url.path,
            "full_path": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "navigation": NAVIGATION,
            "languages": LANGUAGE_NAMES,
            "signed_in": session is not None,
            "default_language": DEFAULT_LANGUAGE,
            **context,
        },
    )
