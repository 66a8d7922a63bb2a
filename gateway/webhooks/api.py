"""The webhook endpoints of the gateway: a channel registers, lists and removes its own webhooks."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway.api import provide_caller, require_access_token
from gateway.oauth import Caller
from gateway.webhooks.repository import WebhookRepository
from gateway.webhooks.schemas import DeliveryList, DeliveryStatus, RegisteredWebhook, WebhookIn, WebhookList, WebhookOut
from gateway.webhooks.service import WebhookService
from tillit.patterns import exact
from tillit.problems import problem_responses

__all__ = ["WebhookController"]

UUID_PATTERN = exact(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
WebhookIdPath = Annotated[str, Parameter(pattern=UUID_PATTERN, description="A webhook id")]


def provide_webhook_service(session: AsyncSession, state: State) -> WebhookService:
    return WebhookService(
        WebhookRepository(session), allow_insecure_loopback=state.settings.webhooks_allow_insecure_loopback
    )


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    guards = [require_access_token]
    dependencies = {
        "caller": Provide(provide_caller, sync_to_thread=False),
        "webhooks": Provide(provide_webhook_service, sync_to_thread=False),
    }

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Register an https endpoint for consent-change events; the signing secret is shown only now",
        description=(
            "Events: consent.withdrawn, consent.refused, consent.expired (for purposes the channel is "
            "registered for), subject.erased, preference_link.requested (a shopper with an expired preference "
            "link asks for a new one: send them a fresh link) and consent.confirmation_requested (a shopper gave a "
            "double opt-in consent on the preference page: e-mail the confirmation_token's link). Each is "
            "POSTed as JSON with Tillit-Webhook-Id and "
            "Tillit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>; "
            "retried with backoff until the endpoint answers 2xx."
        ),
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    )
    async def register(self, data: WebhookIn, caller: Caller, webhooks: WebhookService) -> RegisteredWebhook:
        return await webhooks.register(caller, data)

    @get("/", summary="This client's webhooks", responses=problem_responses(401, 403, 429))
    async def list_webhooks(self, caller: Caller, webhooks: WebhookService) -> WebhookList:
        return await webhooks.list(caller)

    @get(
        "/{webhook_id:str}",
        summary="One of this client's webhooks",
        responses=problem_responses(400, 401, 403, 404, 429),
    )
    async def get_webhook(self, webhook_id: WebhookIdPath, caller: Caller, webhooks: WebhookService) -> WebhookOut:
        return await webhooks.get(caller, webhook_id)

    @delete(
        "/{webhook_id:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove a webhook and its deliveries; nothing more is sent to it",
        responses=problem_responses(400, 401, 403, 404, 429),
    )
    async def delete_webhook(self, webhook_id: WebhookIdPath, caller: Caller, webhooks: WebhookService) -> None:
        await webhooks.delete(caller, webhook_id)

    @get(
        "/{webhook_id:str}/deliveries",
        summary="Deliveries to a webhook, newest first: status, attempts, last answer or error, next attempt",
        responses=problem_responses(400, 401, 403, 404, 429),
    )
    async def deliveries(
        self,
        webhook_id: WebhookIdPath,
        caller: Caller,
        webhooks: WebhookService,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
    ) -> DeliveryList:
        return await webhooks.deliveries(caller, webhook_id, status, limit)
