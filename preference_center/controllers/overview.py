"""The overview: what the shop holds about the shopper, and each purpose's status in plain words."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.response import Template

from preference_center.views import consent_views, profile_rows
from preference_center.web import gateway_of, optional_session, render

__all__ = ["OverviewController"]


class OverviewController(Controller):
    path = "/"
    include_in_schema = False

    @get("/")
    async def overview(self, request: Request[Any, Any, Any], state: State) -> Template:
        session = optional_session(request)
        if session is None:
            return render(request, "home.html.j2")
        gateway = gateway_of(state)
        profile, consents = await asyncio.gather(
            gateway.profile(session.token), gateway.consents(session.token, session.lang)
        )
        return render(
            request,
            "overview.html.j2",
            session=session,
            rows=profile_rows(profile),
            purposes=consent_views(consents),
        )
