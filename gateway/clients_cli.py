"""``tillit clients create|list|rotate-secret|disable|enable``: channel OAuth2 clients.

Works on the gateway's own database (the URL and schema the gateway uses), migrating it first if
needed, so it runs before the first ``tillit up`` as well as beside a running gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TypeVar

import msgspec

from gateway.app import MIGRATIONS
from gateway.clients import ClientInfo, ClientService, IssuedCredentials
from gateway.repository import ClientRepository
from gateway.revocation import REFRESH_SECONDS
from tillit.db import Database
from tillit.migrations import upgrade_to_head
from tillit.policy import load_policy
from tillit.problems import TillitError
from tillit.settings import Settings, load_settings

__all__ = ["add_client_commands", "client_service", "format_clients", "run_client_command"]

T = TypeVar("T")
_COLUMNS = ("CLIENT ID", "CHANNEL", "SCOPES", "CREATED", "SECRET ROTATED", "STATUS")


@asynccontextmanager
async def client_service(settings: Settings) -> AsyncIterator[ClientService]:
    """A :class:`ClientService` in one transaction on the gateway's database, committed on success."""
    database = Database(settings.database_url, settings.database_schema)
    if database.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        await upgrade_to_head(database, MIGRATIONS)
        async with database.sessionmaker() as session, session.begin():
            yield ClientService(ClientRepository(session), load_policy(settings.policy_dir))
    finally:
        await database.dispose()


def _run(settings: Settings, action: Callable[[ClientService], Awaitable[T]]) -> T:
    async def run() -> T:
        async with client_service(settings) as service:
            return await action(service)

    return asyncio.run(run())


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def format_clients(clients: list[ClientInfo]) -> str:
    rows = [
        (
            client.client_id,
            client.channel,
            " ".join(client.scopes),
            _when(client.created_at),
            _when(client.secret_rotated_at),
            f"disabled {_when(client.disabled_at)}" if client.disabled else "enabled",
        )
        for client in clients
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [_COLUMNS, *rows]
    )


def _print_credentials(credentials: IssuedCredentials, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(credentials).decode())
        return
    print(f"client_id:     {credentials.client_id}\nclient_secret: {credentials.client_secret}")
    print(f"channel:       {credentials.channel}\nscopes:        {' '.join(credentials.scopes)}")
    print("The secret is shown only now; tillit keeps only its hash.")


def run_client_command(args: argparse.Namespace) -> int:
    settings = load_settings("gateway")
    try:
        match args.action:
            case "create":
                created = _run(settings, lambda service: service.create(args.channel, args.scopes))
                _print_credentials(created, args.json)
            case "list":
                clients = _run(settings, lambda service: service.list())
                print(msgspec.json.encode(clients).decode() if args.json else format_clients(clients))
            case "rotate-secret":
                rotated = _run(settings, lambda service: service.rotate_secret(args.client_id))
                _print_credentials(rotated, args.json)
                if not args.json:
                    print("The old secret no longer works; tokens issued with it expire on their own.")
            case "disable" | "enable":
                disabled = args.action == "disable"
                client = _run(settings, lambda service: service.set_disabled(args.client_id, disabled))
                print(
                    f"client {client.client_id} {args.action}d"
                    + (
                        f": no new tokens, and every gateway refuses its issued tokens within {REFRESH_SECONDS:g}s"
                        if disabled
                        else ""
                    )
                )
    except TillitError as exc:
        print(f"tillit clients {args.action}: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clients = commands.add_parser("clients", help="channel OAuth2 clients")
    actions = clients.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a client; the secret is shown once")
    create.add_argument("--channel", required=True)
    create.add_argument("--scopes", nargs="+", required=True)
    create.add_argument("--json", action="store_true", help="print the credentials as JSON")
    listing = actions.add_parser("list", help="every client: channel, scopes, created, secret rotated, status")
    listing.add_argument("--json", action="store_true", help="print the clients as JSON")
    rotate = actions.add_parser("rotate-secret", help="a new secret (shown once); the old one stops working")
    rotate.add_argument("client_id")
    rotate.add_argument("--json", action="store_true", help="print the new credentials as JSON")
    disable = actions.add_parser("disable", help="no new tokens, and the tokens it holds are refused")
    disable.add_argument("client_id")
    enable = actions.add_parser("enable", help="let a disabled client get tokens again")
    enable.add_argument("client_id")
