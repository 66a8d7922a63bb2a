"""Access-token key rotation, on the real gateway app restarted after each rotation.

Tokens signed with the previous key keep working while they can still be valid, new tokens carry
the new key's ``kid``, the JWKS publishes both, and a key that left the set no longer verifies.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc import jws
from litestar import Litestar
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.clients_cli import client_service
from tillit.keys import ACCESS_TOKEN_KEY, KEY_NAMES, ensure_signing_key, rotate_signing_key
from tillit.settings import Settings, load_settings

pytestmark = pytest.mark.anyio

RETAIN = timedelta(seconds=360)


@pytest.fixture
async def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [name for name in os.environ if name.startswith("TILLIT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TILLIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TILLIT_LOG_LEVEL", "WARNING")
    settings = load_settings("gateway")
    for name in KEY_NAMES:
        ensure_signing_key(settings.keys_dir, name)
    return settings


@asynccontextmanager
async def gateway() -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A gateway process's app, started (migrations, keys read) as ``tillit serve gateway`` does."""
    async with AsyncTestClient(app=create_app()) as client:
        yield client


async def token(client: AsyncTestClient[Litestar], client_id: str, secret: str) -> str:
    response = await client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def kid_of(access_token: str) -> str:
    return str(jws.extract_compact(access_token.encode()).headers()["kid"])


async def audit_status(client: AsyncTestClient[Litestar], access_token: str) -> int:
    response = await client.get(
        "/v1/audit/releases", params={"channel": "email"}, headers={"Authorization": f"Bearer {access_token}"}
    )
    return response.status_code


async def test_rotation_keeps_old_tokens_valid_until_their_key_is_pruned(settings: Settings) -> None:
    async with client_service(settings) as service:
        credentials = await service.create("email", ["audit:read"], client_id="auditor")
    login = (credentials.client_id, credentials.client_secret)

    async with gateway() as client:
        first = await token(client, *login)
        first_kid = kid_of(first)
        assert [key["kid"] for key in (await client.get("/.well-known/jwks.json")).json()["keys"]] == [first_kid]
        assert await audit_status(client, first) == 200

    t0 = datetime.now(UTC)
    second_kid, published, pruned = rotate_signing_key(settings.keys_dir, ACCESS_TOKEN_KEY, retain=RETAIN, now=t0)
    assert (published, pruned) == ([second_kid, first_kid], [])
    async with gateway() as client:
        second = await token(client, *login)
        assert kid_of(second) == second_kid != first_kid
        jwks = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert [key["kid"] for key in jwks] == [second_kid, first_kid]
        assert all("d" not in key for key in jwks)
        assert await audit_status(client, first) == 200
        assert await audit_status(client, second) == 200

    # Once the first key has been retired for longer than a token can live, it is pruned.
    third_kid, published, pruned = rotate_signing_key(
        settings.keys_dir, ACCESS_TOKEN_KEY, retain=RETAIN, now=t0 + RETAIN
    )
    assert (published, pruned) == ([third_kid, second_kid], [first_kid])
    async with gateway() as client:
        assert await audit_status(client, first) == 401
        assert await audit_status(client, second) == 200

    # A leaked key: every earlier key goes at once.
    _, published, pruned = rotate_signing_key(settings.keys_dir, ACCESS_TOKEN_KEY, retain=RETAIN, revoke_previous=True)
    assert len(published) == 1
    assert set(pruned) == {third_kid, second_kid}
    async with gateway() as client:
        assert await audit_status(client, second) == 401
        assert await audit_status(client, await token(client, *login)) == 200
