"""Personalization decisions: made by the rules service on exactly what the release rule lets out.

The gateway builds the consent-filtered profile as for a profile release (and audits it as one),
then hands only that profile, the visit's context and the caller's candidate products to the rules
service. A field the shopper did not consent to never reaches the rules, so no segment can match
on it. The decision's audit row is written only once the rules service has answered, and the
answer leaves only once that row is committed: with the rules service down the answer is a 503,
nothing is released and nothing is audited.

The caller's candidates go to the rules service as sent, with their SHA-256; once it said it holds
that list, the digest goes alone, in one request with the other decisions in flight, and a rules
service that no longer holds it (restarted, or another replica) costs one resend of the list
(:meth:`gateway.upstream.Upstream.decide`). None of this changes the answer, its errors or the
audit: a list the rules service refuses is still the caller's 400.

The rules service never sees the subject id. For A/B assignment it gets ``assignment_key``:
HMAC-SHA256 of the subject id under a key derived from the gateway's link-signing key, so that it
is stable per shopper on every replica and means nothing outside the gateway. Rotating the link
key (``tillit keys rotate link``) therefore reshuffles running experiments, as it revokes links.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from gateway.api import PurposeQuery, provide_caller, provide_gateway_service, require_access_token
from gateway.oauth import Caller
from gateway.repository import ReleaseAuditRepository
from gateway.schemas import SubjectDecision
from gateway.service import GatewayService
from gateway.upstream import Upstream
from tillit.keys import LINK_KEY, load_private_key
from tillit.patterns import exact
from tillit.problems import InvalidRequest, TillitError, Unprocessable, problem_responses
from tillit.types import SubjectIdPath

__all__ = [
    "DECISIONS_SCOPE",
    "DECISION_BODY_BYTES",
    "MAX_CANDIDATES",
    "CandidateProduct",
    "DecisionBody",
    "DecisionContext",
    "DecisionController",
    "DecisionService",
    "assignment_key",
    "decide_on_body",
    "sessionless_decisions",
]

DECISIONS_SCOPE: Final = "decisions:read"
MAX_CANDIDATES: Final = 500
_NAME: Final = r"[a-z][a-z0-9_-]{0,31}"
_SLOT: Final = rf"{_NAME}(\.{_NAME})?"
_MAX_SLOTS: Final = 10
_ID: Final = exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DECISION_BODY_BYTES: Final = 1024 * 1024
"""The largest ``POST .../decisions`` body (413 beyond)."""

Name = Annotated[str, msgspec.Meta(pattern=exact(f"^{_NAME}$"))]
Days = Annotated[int, msgspec.Meta(ge=0, le=36_500)]


class DecisionContext(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The visit: the small, bounded set of context the rules service accepts (``context.<key>`` in rules)."""

    page: Annotated[Name, msgspec.Meta(description="Page type: home, product, ...")] | None = None
    product_id: Annotated[str, msgspec.Meta(pattern=_ID, description="Product on screen")] | None = None
    product_brand: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    department: Name | None = None
    category: Name | None = None
    visit_count: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] | None = None
    days_since_last_visit: Days | None = None
    days_since_last_purchase: Days | None = None
    slots: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=exact(f"^{_SLOT}$"))]],
        msgspec.Meta(max_length=_MAX_SLOTS, description="Content slots to fill, e.g. home.hero"),
    ] = msgspec.field(default_factory=list)


Text = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CandidateProduct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A product the shop would show (e.g. from its recommender); the rules filter and reorder them."""

    # Only published: the gateway forwards candidates unread (see DecisionBody), and the rules
    # service's product holds them to exactly this (a test keeps the two the same).
    id: Annotated[str, msgspec.Meta(pattern=_ID)]
    brand: Text
    category: Text
    department: Text
    price: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)]
    on_sale: bool = False
    tags: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=32)]], msgspec.Meta(max_length=20)] = (
        msgspec.field(default_factory=list)
    )


def _candidates_schema() -> dict[str, Any]:
    """What ``candidates`` publishes: at most :data:`MAX_CANDIDATES` :class:`CandidateProduct`, or null.

    msgspec's own schema of that type, with the product inlined: the field itself holds raw JSON.
    """
    (products,), components = msgspec.json.schema_components(
        [Annotated[list[CandidateProduct], msgspec.Meta(max_length=MAX_CANDIDATES)]], ref_template="{name}"
    )
    products["items"] = components[products["items"]["$ref"]]
    return {"anyOf": [products, {"type": "null"}], "default": None}


_NULL: Final = msgspec.Raw(b"null")


def _no_candidates() -> msgspec.Raw:
    return _NULL


class DecisionBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A decision request: the visit, the slots to fill, and the products to rank (else the shop's
    demo catalogue for the context's department and category), at most ``limit`` answered.

    ``candidates`` stays the caller's JSON (any valid JSON passes here) and is forwarded as sent
    (or, once the rules service holds that very JSON, named by its SHA-256: see
    :meth:`gateway.upstream.Upstream.decide`): the rules service decodes it into its products
    anyway, holds it to the same schema and refuses anything else naming the candidate
    (``$.candidates[3].price``), which the caller gets as its own 400 (:func:`_refused_candidates`).
    Checking the list here too was a quarter of the gateway's CPU per decision. A refused list costs
    the consent and profile reads first, but nothing is released or audited: the rules service
    refuses before any decision exists.
    """

    context: DecisionContext = msgspec.field(default_factory=DecisionContext)
    slots: Annotated[
        list[Annotated[str, msgspec.Meta(pattern=exact(f"^{_SLOT}$"))]], msgspec.Meta(max_length=_MAX_SLOTS)
    ] = msgspec.field(default_factory=list)
    candidates: Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema=_candidates_schema())] = msgspec.field(
        default_factory=_no_candidates
    )
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_CANDIDATES)] | None = None

    @property
    def candidate_list(self) -> msgspec.Raw | None:
        """The candidates' JSON as sent; None for none (absent or ``null``)."""
        return None if self.candidates == _NULL else self.candidates


def _refused_candidates(exc: TillitError) -> InvalidRequest | None:
    """The rules service's refusal of the candidates as the caller's own 400 (its JSON paths are the
    body's: ``$.candidates[1].id``); None for any other problem."""
    if exc.status_code != 400 or exc.slug != "validation" or "`$.candidates" not in exc.detail:
        return None
    message = exc.detail.removeprefix("body: ")
    return InvalidRequest(f"body: {message}", errors=[{"message": message, "source": "body"}])


@functools.cache
def _assignment_secret(keys_dir: Path) -> bytes:
    secret = load_private_key(keys_dir, LINK_KEY).as_dict(private=True)["d"]
    return hashlib.sha256(b"tillit experiment assignment v1\x00" + str(secret).encode()).digest()


def assignment_key(keys_dir: Path, subject_id: str) -> str:
    """The shopper's pseudonym for A/B assignment: stable, keyed, never the subject id."""
    return hmac.new(_assignment_secret(keys_dir), subject_id.encode(), hashlib.sha256).hexdigest()[:32]


class DecisionService:
    def __init__(self, gateway: GatewayService, upstream: Upstream, keys_dir: Path) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.keys_dir = keys_dir

    async def decide(
        self,
        caller: Caller,
        subject_id: str,
        purpose: str,
        context: DecisionContext,
        candidates: msgspec.Raw | None = None,
        limit: int | None = None,
    ) -> SubjectDecision:
        """``candidates``: the JSON array of :class:`CandidateProduct` the caller sent, already checked."""
        release, record = await self.gateway.prepare_release(caller, subject_id, purpose, scope=DECISIONS_SCOPE)
        request: dict[str, Any] = {
            "purpose": purpose,
            "profile": release.fields,
            "context": context,
            "assignment_key": assignment_key(self.keys_dir, subject_id),
        }
        if candidates is not None:
            request["candidates"] = candidates
        if limit is not None:
            request["limit"] = limit
        with self.gateway.audit.expecting():
            answer = await self.upstream.decide(request)
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


def provide_decision_service(gateway: GatewayService, request: Request[Any, Any, Any]) -> DecisionService:
    return DecisionService(gateway, gateway.upstream, request.app.state.settings.keys_dir)


def sessionless_decisions(state: State) -> DecisionService:
    """The service without a request session, as :func:`gateway.api.release_profile` releases: with the
    audit writer, the route's session is never used (the row goes through the writer, a refused
    attempt's row commits on its own)."""
    audit = ReleaseAuditRepository(None, state.get("audit_writer"), bind=state.database.engine)
    return DecisionService(GatewayService(state.policy, state.upstream, audit), state.upstream, state.settings.keys_dir)


async def decide_on_body(
    decisions: DecisionService, caller: Caller, subject_id: str, purpose: str, data: DecisionBody
) -> SubjectDecision:
    """``POST .../decisions`` once its body is decoded: the route and its fast path
    (:mod:`gateway.fast_decision`) both answer through this."""
    slots = list(dict.fromkeys([*data.context.slots, *data.slots]))
    if len(slots) > _MAX_SLOTS:
        raise Unprocessable(f"at most {_MAX_SLOTS} slots in all (context.slots and slots)", slug="too-many-slots")
    context = msgspec.structs.replace(data.context, slots=slots)
    try:
        return await decisions.decide(caller, subject_id, purpose, context, data.candidate_list, data.limit)
    except TillitError as exc:
        refused = _refused_candidates(exc)
        if refused is None:
            raise
        raise refused from exc


_DESCRIPTION: Final = (
    "The profile is filtered for the purpose exactly as for a profile release (and audited as one); the "
    "rules service sees only what was released, plus the visit context given here, never the subject id. "
    "Answers the matched segments, the content variant per slot, the products after the merchandising "
    "rules and the reasons (which rule, why)."
)


class DecisionController(Controller):
    path = "/v1/subjects/{subject_id:str}"
    tags = ["decisions"]
    guards = [require_access_token]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "gateway": Provide(provide_gateway_service),
        "decisions": Provide(provide_decision_service, sync_to_thread=False),
    }

    @get(
        "/decisions",
        summary="A personalization decision for one visit, made only on the data released for the purpose",
        description=f"{_DESCRIPTION} Products come from the demo catalogue; POST to rank your own candidates.",
        responses=problem_responses(400, 401, 403, 404, 422, 503, 429),
    )
    async def decide(
        self,
        subject_id: SubjectIdPath,
        purpose: PurposeQuery,
        caller: Caller,
        decisions: DecisionService,
        page: Annotated[
            str | None,
            Parameter(pattern=exact(f"^{_NAME}$"), max_length=32, description="Page type: home, product, ..."),
        ] = None,
        product_id: Annotated[
            str | None,
            Parameter(
                pattern=exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"), max_length=64, description="Product on screen"
            ),
        ] = None,
        department: Annotated[str | None, Parameter(pattern=exact(f"^{_NAME}$"), max_length=32)] = None,
        category: Annotated[str | None, Parameter(pattern=exact(f"^{_NAME}$"), max_length=32)] = None,
        # gt=-1, not ge=0: Litestar leaves a zero bound out of the published schema.
        visit_count: Annotated[int | None, Parameter(gt=-1, le=1_000_000, description="Visits so far")] = None,
        days_since_last_visit: Annotated[int | None, Parameter(gt=-1, le=36_500)] = None,
        days_since_last_purchase: Annotated[int | None, Parameter(gt=-1, le=36_500)] = None,
        slots: Annotated[
            str | None,
            Parameter(
                pattern=exact(f"^{_SLOT}(,{_SLOT}){{0,{_MAX_SLOTS - 1}}}$"),
                max_length=_MAX_SLOTS * 66,
                description=f"Content slots to fill, comma-separated (at most {_MAX_SLOTS}): home.hero,sidebar",
            ),
        ] = None,
    ) -> SubjectDecision:
        context = DecisionContext(
            page=page,
            product_id=product_id,
            department=department,
            category=category,
            visit_count=visit_count,
            days_since_last_visit=days_since_last_visit,
            days_since_last_purchase=days_since_last_purchase,
            slots=list(dict.fromkeys(slots.split(","))) if slots else [],
        )
        return await decisions.decide(caller, subject_id, purpose, context)

    @post(
        "/decisions",
        status_code=HTTP_200_OK,
        summary="A personalization decision for one visit, ranking the caller's candidate products",
        description=f"{_DESCRIPTION} At most {MAX_CANDIDATES} candidates and {_MAX_SLOTS} slots.",
        request_max_body_size=DECISION_BODY_BYTES,
        responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503, 429),
    )
    async def decide_with_candidates(
        self,
        subject_id: SubjectIdPath,
        purpose: PurposeQuery,
        data: DecisionBody,
        caller: Caller,
        decisions: DecisionService,
    ) -> SubjectDecision:
        """The common form of this request is answered before Litestar sees it (gateway.fast_decision);
        this handler answers the rest (and documents the endpoint)."""
        return await decide_on_body(decisions, caller, subject_id, purpose, data)
