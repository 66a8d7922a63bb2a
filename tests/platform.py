"""A whole tillit platform started as real processes for the cross-service suites."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tillit.demo import create_client
from tillit.keys import ACCESS_TOKEN_KEY, KEY_NAMES, SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
from tillit.launcher import Platform
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import COMPONENTS
from tillit.testing import POSTGRES_URL, postgres_available

__all__ = ["POSTGRES_URL", "RunningPlatform", "free_port", "postgres_available", "running_platform"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Channel:
    client_id: str
    client_secret: str
    channel: str
    token: str
    token_expires_at: float = 0.0


@dataclass
class RunningPlatform:
    platform: Platform
    backend: str
    data_dir: Path
    env: dict[str, str]
    channels: dict[str, Channel] = field(default_factory=dict)

    @property
    def gateway(self) -> str:
        return self.platform.url("gateway")

    def url(self, component: str) -> str:
        return self.platform.url(component)

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    def service_headers(self, service: str) -> dict[str, str]:
        issuer = ServiceTokenIssuer(load_private_key(self.keys_dir, SERVICE_TOKEN_KEY), ttl_seconds=600)
        return issuer.headers_for(service)

    def access_signing_key(self) -> Any:
        return load_private_key(self.keys_dir, ACCESS_TOKEN_KEY)

    def auth(self, channel: str) -> dict[str, str]:
        """A bearer header for ``channel``; the token is renewed when it is about to expire."""
        client = self.channels[channel]
        if time.monotonic() > client.token_expires_at - 60:
            client.token, client.token_expires_at = self._token(client.client_id, client.client_secret)
        return {"Authorization": f"Bearer {client.token}"}

    def _token(self, client_id: str, client_secret: str) -> tuple[str, float]:
        response = httpx.post(
            f"{self.gateway}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
        )
        response.raise_for_status()
        body = response.json()
        return body["access_token"], time.monotonic() + body["expires_in"]

    def add_channel(self, channel: str, scopes: list[str], name: str | None = None) -> Channel:
        """A client of ``channel``, kept as ``self.channels[name or channel]`` (``auth(name)``)."""
        credentials = asyncio.run(create_client(self.platform.settings["gateway"], channel, scopes))
        token, expires_at = self._token(credentials.client_id, credentials.client_secret)
        client = Channel(credentials.client_id, credentials.client_secret, channel, token, expires_at)
        self.channels[name or channel] = client
        return client

    def new_shopper(self, profile: dict[str, Any], consents: tuple[tuple[str, str], ...] = ()) -> str:
        """A fresh subject with a profile (and consents) imported straight into the services."""
        subject_id = f"shopper-{uuid.uuid4().hex[:12]}"
        httpx.patch(
            f"{self.url('preferences')}/v1/subjects/{subject_id}/profile",
            json={"fields": profile, "source": "import"},
            headers=self.service_headers("preferences"),
        ).raise_for_status()
        for purpose, action in consents:
            httpx.post(
                f"{self.url('consent')}/v1/subjects/{subject_id}/events",
                json={"purpose": purpose, "action": action, "source": "import"},
                headers=self.service_headers("consent"),
            ).raise_for_status()
        return subject_id

    def restart(self, component: str) -> None:
        self.platform.stop_one(component)
        self.platform.start_one(component)
        self.platform.wait_ready(components=[component])


def platform_env(
    backend: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> tuple[dict[str, str], str | None]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TILLIT_")}
    # Webhook receivers in the suites listen on loopback over http; polling and retries are quick.
    env["TILLIT_WEBHOOKS_ALLOW_INSECURE_LOOPBACK"] = "1"
    env["TILLIT_WEBHOOK_POLL_SECONDS"] = "0.2"
    env["TILLIT_WEBHOOK_BACKOFF_SECONDS"] = "0.2"
    env["TILLIT_WEBHOOK_BACKOFF_MAX_SECONDS"] = "1"
    env.update(extra_env or {})
    # Suites and benchmarks drive more traffic than a channel's demo limit; tests of the limits set 1.
    env.setdefault("TILLIT_RATE_LIMIT_SCALE", "1000")
    env["TILLIT_DATA_DIR"] = str(data_dir)
    env["TILLIT_LOG_LEVEL"] = "WARNING"
    for component in COMPONENTS:
        env[f"TILLIT_{component.upper()}_PORT"] = str(free_port())
    schema_prefix = None
    if backend == "postgres":
        schema_prefix = f"t{secrets.token_hex(4)}_"
        env["TILLIT_DATABASE_URL"] = POSTGRES_URL
        env["TILLIT_DATABASE_SCHEMA_PREFIX"] = schema_prefix
    return env, schema_prefix


def drop_schemas(prefix: str) -> None:
    import asyncpg

    async def _drop() -> None:
        connection = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
        try:
            for component in COMPONENTS:
                await connection.execute(f'DROP SCHEMA IF EXISTS "{prefix}{component}" CASCADE')
        finally:
            await connection.close()

    asyncio.run(_drop())


@contextmanager
def running_platform(
    backend: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[RunningPlatform]:
    """Every process started on ``backend``; ``extra_env`` adds ``TILLIT_*`` settings (e.g. the server)."""
    env, schema_prefix = platform_env(backend, data_dir, extra_env)
    keys_dir = data_dir / "keys"
    for name in KEY_NAMES:
        ensure_signing_key(keys_dir, name)
    platform = Platform(env, log_dir=data_dir / "logs")
    try:
        platform.start()
        platform.wait_ready()
        yield RunningPlatform(platform=platform, backend=backend, data_dir=data_dir, env=env)
    finally:
        platform.stop()
        if schema_prefix:
            drop_schemas(schema_prefix)
