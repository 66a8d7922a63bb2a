"""Entry by signed link, asking for a fresh one, switching language and signing out."""

from __future__ import annotations

import time
from contextlib import suppress
from datetime import datetime
from typing import Any, Final

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.response import Template

from preference_center.gateway_client import GatewayError, SessionEnded, forwarded_headers
from preference_center.i18n import LANGUAGES
from preference_center.security import Session, SessionSealer, is_secure
from preference_center.views import profile_values
from preference_center.web import (
    LANG_COOKIE,
    gateway_of,
    language_of,
    optional_session,
    render,
    safe_next,
    see_other,
)

__all__ = ["LinkController"]

_TOKEN_HEADERS: Final = {"referrer-policy": "no-referrer"}
_MAX_TOKEN: Final = 2048


def _expiry(answer: dict[str, Any]) -> int:
    if isinstance(answer.get("expires_in"), int | float):
        return int(time.time() + answer["expires_in"])
    if isinstance(answer.get("expires_at"), str):
        return int(datetime.fromisoformat(answer["expires_at"]).timestamp())
    return int(time.time() + 900)


def _link_problem(request: Request[Any, Any, Any], token: str, error: GatewayError) -> Template:
    expired = error.status == 410
    renewable = expired and error.body.get("new_link_available") is not False
    template = render(
        request,
        "link_problem.html.j2",
        status_code=410 if expired else 400,
        expired=expired,
        link_token=token if renewable and len(token) <= _MAX_TOKEN else None,
    )
    template.headers.update(_TOKEN_HEADERS)
    return template


class LinkController(Controller):
    path = "/"
    include_in_schema = False

    @get("/link/{token:str}")
    async def open_link(self, request: Request[Any, Any, Any], state: State, token: str) -> Response[Any]:
        """Exchange the link at the gateway, keep the shopper token in a sealed cookie, drop the token from the URL."""
        gateway = gateway_of(state)
        if len(token) > _MAX_TOKEN:
            return _link_problem(request, "", GatewayError(401, "link-invalid", "too long"))
        headers = forwarded_headers(request.headers, request.client.host if request.client else None)
        try:
            answer = await gateway.open_session(token, headers)
        except SessionEnded as error:
            return _link_problem(request, token, error)
        except GatewayError as error:
            return _link_problem(request, token, error)
        access_token = str(answer["access_token"])
        lang = language_of(request)
        try:
            profile = await gateway.profile(access_token)
            preferred = profile_values(profile).get("preferred_language")
            if preferred in LANGUAGES:
                lang = preferred
        except GatewayError:
            pass
        session = Session(token=access_token, expires=_expiry(answer), lang=lang)
        sealer: SessionSealer = state.sealer
        response = see_other("/")
        response.headers.update(_TOKEN_HEADERS)
        response.cookies.append(sealer.cookie(session, secure=is_secure(request)))
        return response

    @post("/link/renew")
    async def renew_link(self, request: Request[Any, Any, Any], state: State) -> Template:
        """An authentic but expired link: the shop's e-mail channel is asked to send a fresh one."""
        form = await request.form()
        token = str(form.get("link_token") or "")[:_MAX_TOKEN]
        try:
            await gateway_of(state).request_new_link(token)
        except GatewayError:
            return render(request, "link_problem.html.j2", status_code=400, expired=False, link_token=None)
        return render(request, "link_sent.html.j2", status_code=202)

    @post("/language")
    async def switch_language(self, request: Request[Any, Any, Any], state: State) -> Response[Any]:
        """Switch the page language; with a session it is also kept as the profile's preferred language."""
        form = await request.form()
        lang = str(form.get("lang") or "")
        back = safe_next(form.get("next"))
        response = see_other(back)
        if lang not in LANGUAGES:
            return response
        session = optional_session(request)
        secure = is_secure(request)
        if session is not None:
            with suppress(GatewayError):  # the page language still switches; the profile keeps its own
                await gateway_of(state).update_profile(session.token, {"preferred_language": lang})
            sealer: SessionSealer = state.sealer
            response.cookies.append(sealer.cookie(session.with_lang(lang), secure=secure))
        else:
            cookie = Cookie(key=LANG_COOKIE, value=lang, max_age=365 * 86400, httponly=True, secure=secure)
            response.cookies.append(cookie)
        return response

    @post("/sign-out")
    async def sign_out(self, request: Request[Any, Any, Any]) -> Template:
        lang = language_of(request, optional_session(request))
        template = render(request, "signed_out.html.j2", lang=lang)
        template.cookies.append(SessionSealer.removal(secure=is_secure(request)))
        return template
