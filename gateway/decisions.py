"""Personalization decisions: made by the rules service on exactly what the release rule lets out.

The gateway builds the consent-filtered profile as for a profile release (and audits it as one),
then hands only that profile and the visit's context to the rules service. A field the shopper did
not consent to never reaches the rules, so no segment can match on it. With the rules service
down the answer is a 503 and nothing is released (the audit row rolls back with the request).
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from litestar import Controller, get
from litestar.di import Provide
from litestar.params import Parameter

from gateway.api import PurposeQuery, provide_caller, provide_gateway_service, require_access_token
from gateway.audit import refuse_repeated_query
from gateway.oauth import Caller
from gateway.schemas import SubjectDecision
from gateway.service import GatewayService
from gateway.upstream import Upstream
from tillit.problems import problem_responses
from tillit.types import SubjectIdPath

__all__ = ["DECISIONS_SCOPE", "DecisionContext", "DecisionController", "DecisionService"]

DECISIONS_SCOPE: Final = "decisions:read"
_NAME: Final = r"[a-z][a-z0-9_-]{0,31}"
_MAX_SLOTS: Final = 10


class DecisionContext(msgspec.Struct, omit_defaults=True):
    """The visit: the small, bounded set of context the rules service accepts."""

    page: str | None = None
    product_id: str | None = None
    visit_count: int | None = None
    days_since_last_visit: int | None = None
    slots: list[str] = msgspec.field(default_factory=list)


class DecisionService:
    def __init__(self, gateway: GatewayService, upstream: Upstream) -> None:
        self.gateway = gateway
        self.upstream = upstream

    async def decide(self, caller: Caller, subject_id: str, purpose: str, context: DecisionContext) -> SubjectDecision:
        release, record = await self.gateway.prepare_release(caller, subject_id, purpose, scope=DECISIONS_SCOPE)
        answer = await self.upstream.decide(
            {"purpose": purpose, "profile": release.fields, "context": msgspec.to_builtins(context)}
        )
        await self.gateway.audit.record(record)
        return SubjectDecision(
            subject_id=subject_id,
            purpose=purpose,
            release_id=release.release_id,
            segments=answer.segments,
            variants=answer.variants,
            products=answer.products,
            reasons=answer.reasons,
        )


def provide_decision_service(gateway: GatewayService) -> DecisionService:
    return DecisionService(gateway, gateway.upstream)


class DecisionController(Controller):
    path = "/v1/subjects/{subject_id:str}"
    tags = ["decisions"]
    guards = [require_access_token, refuse_repeated_query]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "gateway": Provide(provide_gateway_service, sync_to_thread=False),
        "decisions": Provide(provide_decision_service, sync_to_thread=False),
    }

    @get(
        "/decisions",
        summary="A personalization decision for one visit, made only on the data released for the purpose",
        description=(
            "The profile is filtered for the purpose exactly as for a profile release (and audited as "
            "one); the rules service sees only what was released, plus the visit context given here. "
            "Answers the matched segments, content variants per slot, products and the reasons."
        ),
        responses=problem_responses(400, 401, 403, 404, 422, 503, 429),
    )
    async def decide(
        self,
        subject_id: SubjectIdPath,
        purpose: PurposeQuery,
        caller: Caller,
        decisions: DecisionService,
        page: Annotated[
            str | None, Parameter(pattern=f"^{_NAME}$", max_length=32, description="Page type: home, product, ...")
        ] = None,
        product_id: Annotated[
            str | None,
            Parameter(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", max_length=64, description="Product on screen"),
        ] = None,
        # gt=-1, not ge=0: Litestar leaves a zero bound out of the published schema.
        visit_count: Annotated[int | None, Parameter(gt=-1, le=1_000_000, description="Visits so far")] = None,
        days_since_last_visit: Annotated[int | None, Parameter(gt=-1, le=36_500)] = None,
        slots: Annotated[
            str | None,
            Parameter(
                pattern=f"^{_NAME}(,{_NAME}){{0,{_MAX_SLOTS - 1}}}$",
                max_length=_MAX_SLOTS * 33,
                description=f"Content slots to fill, comma-separated (at most {_MAX_SLOTS}): hero,sidebar",
            ),
        ] = None,
    ) -> SubjectDecision:
        context = DecisionContext(
            page=page,
            product_id=product_id,
            visit_count=visit_count,
            days_since_last_visit=days_since_last_visit,
            slots=list(dict.fromkeys(slots.split(","))) if slots else [],
        )
        return await decisions.decide(caller, subject_id, purpose, context)
