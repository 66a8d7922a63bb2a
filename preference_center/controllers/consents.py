"""Consents: each purpose with its notice, one-click give and withdraw, history and signed receipts."""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import Redirect, Template

from preference_center.gateway_client import GatewayError, forwarded_headers
from preference_center.security import Session
from preference_center.views import consent_views, history_views
from preference_center.web import gateway_of, provide_session, render, see_other

__all__ = ["ConsentsController"]

_PURPOSE: Final = re.compile(r"^[a-z][a-z0-9_.]{0,127}$")
_EVENT_ID: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


class ConsentsController(Controller):
    path = "/consents"
    include_in_schema = False
    dependencies = {"session": Provide(provide_session)}

    @get("/")
    async def consents(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template:
        gateway = gateway_of(state)
        consents, history = await asyncio.gather(
            gateway.consents(session.token, session.lang), gateway.consent_history(session.token)
        )
        changed = request.query_params.get("changed")
        return render(
            request,
            "consents.html.j2",
            session=session,
            purposes=consent_views(consents),
            history=history_views(history, consents),
            changed=changed if isinstance(changed, str) and _PURPOSE.fullmatch(changed) else None,
            done=request.query_params.get("done"),
        )

    @post("/")
    async def change(self, request: Request[Any, Any, Any], state: State, session: Session) -> Redirect | Template:
        """One click gives or withdraws one purpose, effective at once (GDPR Art. 7(3))."""
        form = await request.form()
        purpose = str(form.get("purpose") or "")
        action = str(form.get("action") or "")
        version_text = str(form.get("notice_version") or "")
        if not _PURPOSE.fullmatch(purpose) or action not in ("give", "withdraw"):
            return render(request, "error.html.j2", session=session, status_code=400, problem="bad-form")
        notice_version = int(version_text) if version_text.isdigit() and len(version_text) < 8 else None
        headers = forwarded_headers(request.headers, request.client.host if request.client else None)
        try:
            answer = await gateway_of(state).record_consent(
                session.token, purpose, action, notice_version, session.lang, headers
            )
        except GatewayError as error:
            if error.slug != "notice-outdated":
                raise
            # The notice changed while the page was open: show the current one and let the shopper choose again.
            return see_other(f"/consents?changed={purpose}&done=outdated")
        done = "withdrawn" if action == "withdraw" else ("pending" if answer.get("status") == "pending" else "given")
        return see_other(f"/consents?changed={purpose}&done={done}#purpose-{purpose.replace('.', '-')}")

    @get("/receipts/{event_id:str}")
    async def receipt(
        self, request: Request[Any, Any, Any], state: State, session: Session, event_id: str
    ) -> Response[Any]:
        """The signed consent receipt (compact JWS, Kantara v1.1 claims), to keep or verify offline."""
        if not _EVENT_ID.fullmatch(event_id):
            return render(request, "error.html.j2", session=session, status_code=404, problem="not-found")
        receipt = await gateway_of(state).receipt(session.token, event_id)
        return Response(
            content=receipt,
            media_type="application/jose",
            headers={"content-disposition": f'attachment; filename="consent-receipt-{event_id}.jws"'},
        )
