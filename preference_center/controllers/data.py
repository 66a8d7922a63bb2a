"""My data: download everything the gateway can export today; delete my data: an erasure request."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import Redirect, Template

from preference_center.security import Session
from preference_center.views import profile_rows
from preference_center.web import gateway_of, provide_session, render, see_other

__all__ = ["DataController"]


def _requests(answer: dict[str, Any]) -> list[dict[str, Any]]:
    items = answer.get("requests") if isinstance(answer.get("requests"), list) else []
    return sorted(
        (item for item in items if isinstance(item, dict)),
        key=lambda item: str(item.get("received_at", "")),
        reverse=True,
    )


class DataController(Controller):
    path = "/"
    include_in_schema = False
    dependencies = {"session": Provide(provide_session)}

    @get("/data")
    async def data(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template:
        gateway = gateway_of(state)
        profile, requests = await asyncio.gather(gateway.profile(session.token), gateway.requests(session.token))
        return render(
            request,
            "data.html.j2",
            session=session,
            rows=profile_rows(profile),
            requests=[item for item in _requests(requests) if item.get("type") == "access"],
            asked=request.query_params.get("asked"),
        )

    @get("/data/export")
    async def export(self, state: State, session: Session) -> Response[bytes]:
        """Everything the gateway can export for this shopper now, as the JSON it gives."""
        answer = await gateway_of(state).export(session.token)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d")
        return Response(
            content=answer.content,
            media_type="application/json",
            headers={"content-disposition": f'attachment; filename="my-data-{stamp}.json"'},
        )

    @post("/data/access")
    async def ask_access(self, state: State, session: Session) -> Redirect:
        await gateway_of(state).create_request(session.token, "access")
        return see_other("/data?asked=1")

    @get("/delete")
    async def delete_page(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template:
        requests = await gateway_of(state).requests(session.token)
        erasures = [item for item in _requests(requests) if item.get("type") == "erasure"]
        return render(request, "delete.html.j2", session=session, erasures=erasures, missing=False)

    @post("/delete")
    async def delete(self, request: Request[Any, Any, Any], state: State, session: Session) -> Redirect | Template:
        form = await request.form()
        if form.get("confirm") != "yes":
            requests = await gateway_of(state).requests(session.token)
            erasures = [item for item in _requests(requests) if item.get("type") == "erasure"]
            return render(request, "delete.html.j2", session=session, erasures=erasures, missing=True, status_code=422)
        await gateway_of(state).create_request(session.token, "erasure")
        return see_other("/delete")
