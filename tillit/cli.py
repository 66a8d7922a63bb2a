"""The ``tillit`` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

import msgspec

from tillit.keys import ACCESS_TOKEN_KEY, SERVICE_TOKEN_KEY, ensure_signing_key
from tillit.launcher import APP_FACTORIES, Platform, PlatformError
from tillit.policy import PolicyError, load_policy
from tillit.settings import COMPONENTS, load_settings

__all__ = ["main"]


def _serve(component: str) -> int:
    """Run one component in this process until SIGINT or SIGTERM.

    granian is the server (see the README's "Why granian"); ``TILLIT_SERVER=uvicorn`` exists so that
    ``bench/asgi_servers.py`` can measure the two side by side.
    """
    settings = load_settings(component)
    if settings.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            APP_FACTORIES[component],
            host=settings.host,
            port=settings.port,
            factory=True,
            workers=1,
            access_log=False,
            log_level=settings.log_level.lower(),
        )
        return 0

    from granian.constants import Interfaces
    from granian.server import Server

    Server(
        APP_FACTORIES[component],
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=1,
        log_access=False,
    ).serve()
    return 0


def _init_keys() -> None:
    keys_dir = load_settings("gateway").keys_dir
    for name in (SERVICE_TOKEN_KEY, ACCESS_TOKEN_KEY):
        ensure_signing_key(keys_dir, name)


def _policy_check() -> int:
    settings = load_settings("gateway")
    try:
        policy = load_policy(settings.policy_dir)
    except PolicyError as exc:
        print(f"policy invalid: {exc}", file=sys.stderr)
        return 1
    print(
        f"policy ok: {len(policy.fields)} fields, {len(policy.purposes)} purposes, "
        f"{len(policy.channels)} channels from {', '.join(policy.sources)}"
    )
    return 0


def _clients_create(channel: str, scopes: list[str], as_json: bool) -> int:
    from tillit.demo import create_client
    from tillit.problems import TillitError

    try:
        credentials = asyncio.run(create_client(load_settings("gateway"), channel, scopes))
    except TillitError as exc:
        print(f"cannot create client: {exc.detail}", file=sys.stderr)
        return 1
    if as_json:
        print(msgspec.json.encode(credentials).decode())
    else:
        print(f"client_id:     {credentials.client_id}\nclient_secret: {credentials.client_secret}")
        print(f"channel:       {credentials.channel}\nscopes:        {' '.join(credentials.scopes)}")
        print("The secret is shown only now; tillit keeps only its hash.")
    return 0


def _up(seed: bool) -> int:
    from tillit.demo import seed_demo

    os.environ.setdefault("TILLIT_DATA_DIR", str(load_settings("gateway").data_dir))
    status = _policy_check()
    if status:
        return status
    _init_keys()
    platform = Platform(os.environ)
    try:
        platform.check_ports()
    except PlatformError as exc:
        print(f"tillit up: {exc}", file=sys.stderr)
        return 1

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Both, explicitly: a shell that starts us in the background leaves SIGINT ignored otherwise.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        platform.start()
        platform.wait_ready()
        credentials = asyncio.run(seed_demo(platform.settings)) if seed else []
        _print_welcome(platform, credentials)
        while all(process.poll() is None for process in platform.processes.values()):
            time.sleep(0.5)
        failed = [name for name, process in platform.processes.items() if process.poll() is not None]
        print(f"tillit up: {', '.join(failed)} stopped unexpectedly; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ntillit up: stopping every process...", file=sys.stderr)
        return 0
    except PlatformError as exc:
        print(f"tillit up: {exc}", file=sys.stderr)
        return 1
    finally:
        codes = platform.stop()
        print(f"tillit up: stopped ({', '.join(f'{k}={v}' for k, v in codes.items())})", file=sys.stderr)


def _print_welcome(platform: Platform, credentials: Sequence[object]) -> None:
    settings = platform.settings["gateway"]
    print("\ntillit is running:")
    for component in COMPONENTS:
        print(f"  {component:<18} {platform.url(component)}")
    print(f"  data directory     {settings.data_dir}")
    print(f"  OpenAPI            {platform.url('gateway')}/schema/openapi.json")
    if credentials:
        print("\nDemo channel clients (OAuth2 client credentials):")
        for item in credentials:
            data = msgspec.to_builtins(item)
            print(f"  {data['channel']:<6} client_id={data['client_id']}  client_secret={data['client_secret']}")
    print("\nPress Ctrl-C to stop.", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tillit", description="Consent-aware preference center platform")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start every process on 127.0.0.1 with demo data")
    up.add_argument("--no-seed", action="store_true", help="do not seed demo data")
    serve = commands.add_parser("serve", help="run one component in the foreground")
    serve.add_argument("component", choices=COMPONENTS)
    keys = commands.add_parser("keys", help="signing keys")
    keys.add_subparsers(dest="action", required=True).add_parser("init", help="create missing keys")
    policy = commands.add_parser("policy", help="the release policy")
    policy.add_subparsers(dest="action", required=True).add_parser("check", help="validate policies/*.yaml")
    clients = commands.add_parser("clients", help="channel OAuth2 clients")
    create = clients.add_subparsers(dest="action", required=True).add_parser("create", help="create a client")
    create.add_argument("--channel", required=True)
    create.add_argument("--scopes", nargs="+", required=True)
    create.add_argument("--json", action="store_true", help="print the credentials as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    match args.command:
        case "up":
            return _up(seed=not args.no_seed)
        case "serve":
            return _serve(args.component)
        case "keys":
            _init_keys()
            return 0
        case "policy":
            return _policy_check()
        case "clients":
            return _clients_create(args.channel, args.scopes, args.json)
    return 2
