"""Channel clients over their lifetime: listing, secret rotation, disabling and enabling again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from argon2 import PasswordHasher, extract_parameters

from gateway.clients import ClientService, OAuthClient
from gateway.repository import ClientRepository
from gateway.revocation import DisabledClients
from tillit.db import Database
from tillit.policy import load_policy
from tillit.problems import NotFound, Unauthorized, Unavailable
from tillit.settings import REPO_ROOT

pytestmark = pytest.mark.anyio

POLICY = load_policy(REPO_ROOT / "policies")
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 9, tzinfo=UTC)


async def in_transaction(database: Database, clock: datetime, action: str, *args: object) -> Any:
    async with database.sessionmaker() as session, session.begin():
        service = ClientService(ClientRepository(session), POLICY, clock=lambda: clock)
        return await getattr(service, action)(*args)


async def oauth_client(database: Database, client_id: str) -> OAuthClient:
    async with database.sessionmaker() as session:
        row = await ClientRepository(session).get(client_id)
        assert row is not None
        return OAuthClient(row)


async def test_list_shows_every_client_without_secrets(database: Database) -> None:
    await in_transaction(database, T0, "create", "sms", ["profiles:read"], "sms-1")
    await in_transaction(database, T0, "create", "email", ["profiles:read", "audit:read"], "email-1")
    listed = await in_transaction(database, T1, "list")
    assert [(c.client_id, c.channel, c.scopes, c.created_at, c.disabled) for c in listed] == [
        ("email-1", "email", ["profiles:read", "audit:read"], T0, False),
        ("sms-1", "sms", ["profiles:read"], T0, False),
    ]
    assert all(c.secret_rotated_at is None for c in listed)
    assert not any("secret" in name and name != "secret_rotated_at" for name in listed[0].__struct_fields__)


async def test_a_rotated_secret_replaces_the_old_one_at_once(database: Database) -> None:
    created = await in_transaction(database, T0, "create", "email", ["profiles:read"], "email-1")
    rotated = await in_transaction(database, T1, "rotate_secret", "email-1")
    assert rotated.client_secret != created.client_secret
    client = await oauth_client(database, "email-1")
    assert not client.check_client_secret(created.client_secret)
    assert client.check_client_secret(rotated.client_secret)
    assert rotated.client_secret not in client.row.secret_hash
    [listed] = await in_transaction(database, T1, "list")
    assert listed.secret_rotated_at == T1


async def test_disabled_clients_get_no_tokens_and_their_issued_ones_are_refused(database: Database) -> None:
    await in_transaction(database, T0, "create", "email", ["profiles:read"], "email-1")
    await in_transaction(database, T0, "create", "sms", ["profiles:read"], "sms-1")
    disabled = DisabledClients(database, interval=60)
    await disabled.refresh()
    disabled.check("email-1")

    info = await in_transaction(database, T1, "set_disabled", "email-1", True)
    assert (info.disabled, info.disabled_at) == (True, T1)
    assert not (await oauth_client(database, "email-1")).check_grant_type("client_credentials")
    disabled.check("email-1")  # not yet refreshed: the bound is one refresh interval
    await disabled.refresh()
    with pytest.raises(Unauthorized, match="disabled"):
        disabled.check("email-1")
    disabled.check("sms-1")

    info = await in_transaction(database, T1, "set_disabled", "email-1", False)
    assert (info.disabled, info.disabled_at) == (False, None)
    assert (await oauth_client(database, "email-1")).check_grant_type("client_credentials")
    await disabled.refresh()
    disabled.check("email-1")


async def test_the_refresher_keeps_the_set_fresh_and_fails_closed_when_it_is_stale(database: Database) -> None:
    await in_transaction(database, T0, "create", "email", ["profiles:read"], "email-1")
    never_loaded = DisabledClients(database, interval=60)
    with pytest.raises(Unavailable):
        never_loaded.check("email-1")

    disabled = DisabledClients(database, interval=0.05)
    await disabled.start()
    try:
        await in_transaction(database, T1, "set_disabled", "email-1", True)
        with anyio.fail_after(5):
            while True:
                try:
                    disabled.check("email-1")
                except Unauthorized:
                    break
                await anyio.sleep(0.02)
    finally:
        await disabled.stop()


async def test_unknown_clients_are_named(database: Database) -> None:
    for action, args in (("rotate_secret", ()), ("set_disabled", (True,))):
        with pytest.raises(NotFound, match="no-such"):
            await in_transaction(database, T0, action, "no-such", *args)


async def test_secrets_are_hashed_with_argon2id_at_owasp_cost_and_older_hashes_still_verify(
    database: Database,
) -> None:
    """64 MiB per token request (argon2-cffi's default) was the gateway's peak memory; 19 MiB is OWASP's."""
    issued = await in_transaction(database, T0, "create", "sms", ["profiles:read"], "sms-1")
    client = await oauth_client(database, "sms-1")
    parameters = extract_parameters(client.row.secret_hash)
    assert (parameters.type.name, parameters.memory_cost, parameters.time_cost) == ("ID", 19 * 1024, 2)
    assert client.check_client_secret(issued.client_secret)

    client.row.secret_hash = PasswordHasher().hash(issued.client_secret)
    assert client.check_client_secret(issued.client_secret)
    assert not client.check_client_secret(issued.client_secret + "x")
