"""Signed links a channel puts in front of a shopper: one-click unsubscribe and "manage my preferences".

- ``POST /v1/subjects/{id}/unsubscribe-link`` (scope ``consents:write``) gives the URL and the two
  headers of RFC 8058 for one purpose. The URL accepts ``POST`` with ``List-Unsubscribe=One-Click``,
  with no cookie and no token: the signed link is the authority. It records a withdrawal with
  source ``unsubscribe``. ``GET`` on it only shows a page with a button, never unsubscribes: mail
  scanners fetch links.
- ``POST /v1/subjects/{id}/preference-link`` (scope ``profiles:read``) gives an expiring link into
  the preference center, which verifies it with :func:`tillit.links.verify_preference_link`.
- ``/.well-known/link-keys.json`` publishes the public keys of both.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from joserfc.jwk import ECKey, KeySet
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from gateway.api import provide_caller, require_access_token
from gateway.oauth import Caller
from gateway.release import check_channel_purpose
from gateway.upstream import Upstream
from tillit.links import LinkError, sign_preference_link, sign_unsubscribe, verify_unsubscribe
from tillit.patterns import exact
from tillit.policy import Policy
from tillit.problems import BadRequest, NotFound, Unprocessable, problem_responses
from tillit.settings import Settings
from tillit.types import PurposeKey, SubjectIdPath, utcnow

__all__ = [
    "LinkController",
    "LinkKeys",
    "LinkService",
    "PreferenceLinkIn",
    "PreferenceLinkOut",
    "UnsubscribeController",
    "UnsubscribeLinkIn",
    "UnsubscribeLinkOut",
]

ONE_CLICK: Final = "List-Unsubscribe=One-Click"
_ALREADY: Final = frozenset({"withdrawn", "refused"})
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}

TokenPath = Annotated[
    str,
    Parameter(
        pattern=exact(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"),
        min_length=5,
        max_length=2048,
        description="The signed token of the link",
    ),
]


class LinkKeys(msgspec.Struct, frozen=True):
    private: ECKey
    public: KeySet


class UnsubscribeLinkIn(msgspec.Struct, forbid_unknown_fields=True):
    purpose: PurposeKey


class UnsubscribeLinkOut(msgspec.Struct):
    url: str
    list_unsubscribe: Annotated[str, msgspec.Meta(description="The List-Unsubscribe header's value")]
    list_unsubscribe_post: Annotated[str, msgspec.Meta(description="The List-Unsubscribe-Post header's value")]


class PreferenceLinkIn(msgspec.Struct, forbid_unknown_fields=True):
    """Nothing to choose yet; send ``{}``."""


class PreferenceLinkOut(msgspec.Struct):
    url: str
    expires_at: datetime


class LinkService:
    def __init__(
        self, settings: Settings, policy: Policy, keys: LinkKeys, upstream: Upstream, clock: Any = utcnow
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.keys = keys
        self.upstream = upstream
        self.clock = clock
        self.issuer = settings.url_of("gateway")

    def _check_purpose(self, caller: Caller, purpose: str) -> None:
        declared = check_channel_purpose(self.policy, caller.channel, purpose)
        if declared.legal_basis not in ("consent", "legitimate_interest"):
            raise Unprocessable(
                f"purpose {purpose!r} rests on {declared.legal_basis}, not on consent: there is nothing to "
                "unsubscribe from",
                slug="not-unsubscribable",
            )

    def unsubscribe_link(self, caller: Caller, subject_id: str, purpose: str) -> UnsubscribeLinkOut:
        caller.require("consents:write")
        self._check_purpose(caller, purpose)
        token = sign_unsubscribe(
            self.keys.private,
            issuer=self.issuer,
            subject_id=subject_id,
            purpose=purpose,
            client_id=caller.client_id,
            now=self.clock(),
        )
        url = f"{self.issuer}/unsubscribe/{token}"
        return UnsubscribeLinkOut(url=url, list_unsubscribe=f"<{url}>", list_unsubscribe_post=ONE_CLICK)

    def preference_link(self, caller: Caller, subject_id: str) -> PreferenceLinkOut:
        caller.require("profiles:read")
        token, expires_at = sign_preference_link(
            self.keys.private,
            issuer=self.issuer,
            subject_id=subject_id,
            client_id=caller.client_id,
            now=self.clock(),
            lifetime=timedelta(seconds=self.settings.preference_link_ttl),
        )
        return PreferenceLinkOut(url=f"{self.settings.url_of('preference_center')}/link/{token}", expires_at=expires_at)

    def read_unsubscribe(self, token: str) -> tuple[str, str]:
        """(subject, purpose) of a genuine unsubscribe link; 404 for anything else."""
        try:
            link = verify_unsubscribe(token, self.keys.public, issuer=self.issuer)
        except LinkError as exc:
            raise NotFound(
                f"this unsubscribe link is not valid ({exc}); it was altered or not issued by this shop",
                slug="invalid-link",
            ) from exc
        return link.subject_id, link.purpose

    def purpose_title(self, purpose: str) -> str:
        declared = self.policy.purposes.get(purpose)
        return declared.title if declared is not None else purpose

    async def unsubscribe(self, token: str, user_agent: str | None) -> str:
        """Withdraw the link's consent, unless it is already withdrawn or refused; the purpose."""
        subject_id, purpose = self.read_unsubscribe(token)
        state = (await self.upstream.consent_state(subject_id)).for_purpose(purpose)
        if state is not None and state.status in _ALREADY:
            return purpose
        evidence = {"user_agent": user_agent[:512]} if user_agent else {}
        await self.upstream.record_consent(
            subject_id, {"purpose": purpose, "action": "withdraw", "source": "unsubscribe", "evidence": evidence}
        )
        return purpose


def provide_link_service(state: State) -> LinkService:
    return LinkService(state.settings, state.policy, state.link_keys, state.upstream)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}"
        "button{font-size:1rem;padding:.6rem 1.2rem}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


@dataclass
class OneClickOperation(Operation):
    """RFC 8058: the mail provider POSTs a form; documented here since it is read as a form."""

    def __post_init__(self) -> None:
        schema = Schema(
            type=OpenAPIType.OBJECT,
            required=["List-Unsubscribe"],
            properties={"List-Unsubscribe": Schema(type=OpenAPIType.STRING, enum=["One-Click"])},
        )
        self.request_body = RequestBody(
            required=True,
            content={
                "application/x-www-form-urlencoded": OpenAPIMediaType(schema=schema),
                "multipart/form-data": OpenAPIMediaType(schema=schema),
            },
        )


_HTML_OK = {HTTP_200_OK: ResponseSpec(str, description="A short page for a person", media_type=MediaType.HTML)}


class UnsubscribeController(Controller):
    """The link itself: no token, no cookie; the signature in the URL is the authority."""

    path = "/unsubscribe/{token:str}"
    tags = ["links"]
    dependencies = {"links": Provide(provide_link_service, sync_to_thread=False)}

    @get(
        "/",
        summary="The unsubscribe page: shows a button; never unsubscribes by itself (mail scanners fetch links)",
        media_type=MediaType.HTML,
        sync_to_thread=False,
        responses={**_HTML_OK, **problem_responses(400, 404)},
    )
    def confirm_page(self, token: TokenPath, links: LinkService) -> Response[str]:
        _, purpose = links.read_unsubscribe(token)
        title = html.escape(links.purpose_title(purpose))
        body = (
            f"<p>Stop receiving <strong>{title}</strong>?</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            "<button type=submit>Unsubscribe</button></form>"
        )
        return Response(_page("Unsubscribe", body), media_type=MediaType.HTML, headers=_PAGE_HEADERS)

    @post(
        "/",
        summary="One-click unsubscribe (RFC 8058): POST List-Unsubscribe=One-Click; records a withdrawal",
        status_code=HTTP_200_OK,
        media_type=MediaType.HTML,
        operation_class=OneClickOperation,
        responses={**_HTML_OK, **problem_responses(400, 404, 413, 503)},
    )
    async def one_click(self, token: TokenPath, request: Request[Any, Any, Any], links: LinkService) -> Response[str]:
        links.read_unsubscribe(token)
        form = await request.form()
        if form.get("List-Unsubscribe") != "One-Click":
            raise BadRequest(f"send the form field {ONE_CLICK} (RFC 8058)", slug="not-one-click")
        purpose = await links.unsubscribe(token, request.headers.get("user-agent"))
        body = f"<p>You will no longer receive <strong>{html.escape(links.purpose_title(purpose))}</strong>.</p>"
        return Response(_page("Unsubscribed", body), media_type=MediaType.HTML, headers=_PAGE_HEADERS)


class LinkController(Controller):
    """Links a channel asks for, to put in a message to the shopper."""

    path = "/"
    tags = ["links"]

    @get(
        "/.well-known/link-keys.json",
        summary="Public keys that verify unsubscribe and preference links",
        sync_to_thread=False,
    )
    def link_keys(self, state: State) -> dict[str, Any]:
        keys: LinkKeys = state.link_keys
        return keys.public.as_dict(private=False)

    @post(
        "/v1/subjects/{subject_id:str}/unsubscribe-link",
        status_code=HTTP_200_OK,
        summary="A one-click unsubscribe URL for one purpose, with the List-Unsubscribe headers of RFC 8058",
        guards=[require_access_token],
        dependencies={
            "caller": Provide(provide_caller, sync_to_thread=False),
            "links": Provide(provide_link_service, sync_to_thread=False),
        },
        sync_to_thread=False,
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    )
    def unsubscribe_link(
        self, subject_id: SubjectIdPath, data: UnsubscribeLinkIn, caller: Caller, links: LinkService
    ) -> UnsubscribeLinkOut:
        return links.unsubscribe_link(caller, subject_id, data.purpose)

    @post(
        "/v1/subjects/{subject_id:str}/preference-link",
        status_code=HTTP_200_OK,
        summary="A signed, expiring link into the shopper's preference center",
        guards=[require_access_token],
        dependencies={
            "caller": Provide(provide_caller, sync_to_thread=False),
            "links": Provide(provide_link_service, sync_to_thread=False),
        },
        sync_to_thread=False,
        responses=problem_responses(400, 401, 403, 413, 415, 429),
    )
    def preference_link(
        self, subject_id: SubjectIdPath, data: PreferenceLinkIn, caller: Caller, links: LinkService
    ) -> PreferenceLinkOut:
        return links.preference_link(caller, subject_id)
