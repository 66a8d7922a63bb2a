"""The gateway's Litestar application (``tillit serve gateway``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from gateway.api import ConsentController, OAuthController, SubjectController
from gateway.audiences import AudienceController
from gateway.audit import AuditController
from gateway.audit_writer import AuditWriter
from gateway.decisions import DecisionController
from gateway.fast_decision import FastDecision
from gateway.fast_release import FastRelease
from gateway.links import LinkController, LinkKeys, UnsubscribeController
from gateway.oauth import TokenService
from gateway.ratelimit import RateLimiter
from gateway.revocation import DisabledClients
from gateway.shopper.api import MeController, QuizCatalogueController, ShopperSessionController
from gateway.shopper.service import ShopperLimits
from gateway.shopper.tokens import ShopperTokens
from gateway.upstream import Upstream
from gateway.webhooks.api import WebhookController
from gateway.webhooks.dispatcher import webhook_dispatcher
from tillit.app import create_app as create_component_app
from tillit.keys import (
    ACCESS_TOKEN_KEY,
    LINK_KEY,
    RECEIPT_KEY,
    SERVICE_TOKEN_KEY,
    load_private_key,
    load_public_keys,
)
from tillit.policy import load_policy
from tillit.read_batch import Linger
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import load_settings

__all__ = ["MIGRATIONS", "create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app() -> Litestar:
    settings = load_settings("gateway")
    policy = load_policy(settings.policy_dir)
    access_public_keys = load_public_keys(settings.keys_dir, ACCESS_TOKEN_KEY)
    upstream = Upstream(
        settings,
        ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY), settings.service_token_ttl),
    )

    async def start_tokens(app: Litestar) -> None:
        app.state.disabled_clients = DisabledClients(app.state.database)
        await app.state.disabled_clients.start()
        app.state.tokens = TokenService(
            app.state.database,
            load_private_key(settings.keys_dir, ACCESS_TOKEN_KEY),
            access_public_keys,
            issuer=settings.url_of("gateway"),
            ttl=settings.access_token_ttl,
            disabled=app.state.disabled_clients,
        )
        app.state.shopper_tokens = ShopperTokens(
            load_private_key(settings.keys_dir, ACCESS_TOKEN_KEY),
            access_public_keys,
            issuer=settings.url_of("gateway"),
            ttl=settings.shopper_session_ttl,
        )

    def start_audit_writer(app: Litestar) -> None:
        app.state.audit_writer = AuditWriter(app.state.database, linger=Linger(settings.batch_linger_seconds))

    async def stop_audit_and_upstream(app: Litestar) -> None:
        await app.state.audit_writer.close()
        await upstream.close()

    async def stop_disabled_clients(app: Litestar) -> None:
        disabled: DisabledClients | None = app.state.get("disabled_clients")
        if disabled is not None:
            await disabled.stop()

    start_webhooks, stop_webhooks = webhook_dispatcher(settings, upstream)

    app = create_component_app(
        settings,
        title="tillit gateway",
        description=(
            "The only public entry for personal data. Channels authenticate with OAuth2 client "
            "credentials and receive only the fields that policy and recorded consent allow for the "
            "one purpose they name."
        ),
        route_handlers=[
            OAuthController,
            SubjectController,
            ConsentController,
            WebhookController,
            LinkController,
            UnsubscribeController,
            AuditController,
            DecisionController,
            AudienceController,
            ShopperSessionController,
            MeController,
            QuizCatalogueController,
        ],
        migrations=MIGRATIONS,
        on_startup=[start_tokens, start_audit_writer, start_webhooks],
        on_shutdown=[stop_webhooks, stop_audit_and_upstream, stop_disabled_clients],
        state={
            "policy": policy,
            "upstream": upstream,
            "rate_limiter": RateLimiter(settings.rate_limit_scale),
            "shopper_limits": ShopperLimits(settings.rate_limit_scale),
            "access_token_jwks": access_public_keys.as_dict(private=False),
            "receipt_jwks": load_public_keys(settings.keys_dir, RECEIPT_KEY).as_dict(private=False),
            "link_keys": LinkKeys(
                private=load_private_key(settings.keys_dir, LINK_KEY),
                public=load_public_keys(settings.keys_dir, LINK_KEY),
            ),
        },
    )
    # The common single release and the common decision are answered in front of Litestar's router and
    # exception middleware (gateway.fast_release, gateway.fast_decision: about half of the gateway's CPU
    # per release, and per decision); every other request goes on as before.
    app.asgi_handler = FastRelease(app, FastDecision(app, app.asgi_handler))
    return app
