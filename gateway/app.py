"""The gateway's Litestar application (``tillit serve gateway``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from gateway.api import ConsentController, OAuthController, SubjectController
from gateway.audiences import AudienceController
from gateway.oauth import TokenService
from gateway.upstream import Upstream
from tillit.app import create_app as create_component_app
from tillit.keys import (
    ACCESS_TOKEN_KEY,
    RECEIPT_KEY,
    SERVICE_TOKEN_KEY,
    load_private_key,
    load_public_keys,
)
from tillit.policy import load_policy
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

    def start_tokens(app: Litestar) -> None:
        app.state.tokens = TokenService(
            app.state.database,
            load_private_key(settings.keys_dir, ACCESS_TOKEN_KEY),
            access_public_keys,
            issuer=settings.url_of("gateway"),
            ttl=settings.access_token_ttl,
        )

    async def stop_upstream(_: Litestar) -> None:
        await upstream.close()

    return create_component_app(
        settings,
        title="tillit gateway",
        description=(
            "The only public entry for personal data. Channels authenticate with OAuth2 client "
            "credentials and receive only the fields that policy and recorded consent allow for the "
            "one purpose they name."
        ),
        route_handlers=[OAuthController, SubjectController, ConsentController, AudienceController],
        migrations=MIGRATIONS,
        on_startup=[start_tokens],
        on_shutdown=[stop_upstream],
        state={
            "policy": policy,
            "upstream": upstream,
            "access_token_jwks": access_public_keys.as_dict(private=False),
            "receipt_jwks": load_public_keys(settings.keys_dir, RECEIPT_KEY).as_dict(private=False),
        },
    )
