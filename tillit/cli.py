"""The ``tillit`` command."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType

import msgspec

from gateway.clients_cli import add_client_commands, run_client_command
from services.consent.requests.cli import add_request_commands, run_request_command
from tillit.keys import ACCESS_TOKEN_KEY, KEY_NAMES, SERVICE_TOKEN_KEY, ensure_signing_key, rotate_signing_key
from tillit.launcher import APP_FACTORIES, Platform, PlatformError
from tillit.policy import PolicyError, load_policy
from tillit.policy_cli import add_policy_commands, run_policy_command
from tillit.receipt_cli import add_receipt_commands, run_receipt_command
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

    class PolicyReloadingServer(Server):  # type: ignore[misc, valid-type]
        """SIGHUP reloads the policy inside the worker (atomically, keeping it if the new one is invalid).

        granian's own SIGHUP respawns the workers, and a worker cannot start on an invalid policy.
        """

        def signal_handler_reload(self, *_args: object, **_kwargs: object) -> None:
            for worker in multiprocessing.active_children():
                if worker.pid is not None:
                    os.kill(worker.pid, signal.SIGHUP)

    PolicyReloadingServer(
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
    for name in KEY_NAMES:
        ensure_signing_key(keys_dir, name)


def _rotate_key(name: str, *, revoke_previous: bool) -> int:
    """Rotate one key; earlier public keys are kept for as long as tokens they signed can live.

    Access and service tokens: their lifetime plus a minute of clock skew. Consent receipts (and any
    other key): for good, since what they sign is checked long after.
    """
    settings = load_settings("gateway")
    lifetimes = {ACCESS_TOKEN_KEY: settings.access_token_ttl, SERVICE_TOKEN_KEY: settings.service_token_ttl}
    retain = timedelta(seconds=lifetimes[name] + 60) if name in lifetimes else None
    try:
        kid, published, pruned = rotate_signing_key(
            settings.keys_dir, name, retain=retain, revoke_previous=revoke_previous
        )
    except RuntimeError as exc:
        print(f"tillit keys rotate: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: new signing key {kid}")
    print(f"published: {', '.join(published)}" + (f"; pruned: {', '.join(pruned)}" if pruned else ""))
    print("Restart the processes that use it (every verifier first) to pick it up.")
    return 0


def _consents_import(path: Path, kind: str | None) -> int:
    """Import a CSV or NDJSON file of consents into the consent service's database (all or nothing)."""
    from services.consent.repository import ConsentRepository
    from services.consent.schemas import ImportBatch, ImportResult
    from services.consent.service import ConsentService
    from tillit.db import Database
    from tillit.problems import TillitError

    settings = load_settings("consent")
    kind = kind or ("ndjson" if path.suffix.lower() in (".ndjson", ".jsonl") else "csv")
    try:
        batch = ImportBatch(format=kind, content=path.read_text(encoding="utf-8"))  # type: ignore[arg-type]
    except (OSError, UnicodeError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1

    async def run() -> ImportResult:
        database = Database(settings.database_url, settings.database_schema)
        try:
            async with database.sessionmaker() as session, session.begin():
                service = ConsentService(ConsentRepository(session), load_policy(settings.policy_dir))
                return await service.import_batch(batch)
        finally:
            await database.dispose()

    try:
        result = asyncio.run(run())
    except TillitError as exc:
        print(f"nothing imported: {exc.detail}", file=sys.stderr)
        for error in exc.errors or []:
            print(f"  line {error['line']}: {error['problem']}", file=sys.stderr)
        return 1
    print(f"{result.recorded} consents imported, {result.already_imported} already there, from {result.rows} rows")
    return 0


def _ledger_verify(as_json: bool) -> int:
    """Walk the consent ledger in the consent service's own database (read only)."""
    from services.consent.chain import LedgerReport
    from services.consent.repository import ConsentRepository
    from services.consent.service import ConsentService
    from tillit.db import Database

    settings = load_settings("consent")

    async def verify() -> LedgerReport:
        database = Database(settings.database_url, settings.database_schema)
        try:
            async with database.sessionmaker() as session:
                return await ConsentService(ConsentRepository(session), load_policy(settings.policy_dir)).verify()
        finally:
            await database.dispose()

    report = asyncio.run(verify())
    if as_json:
        print(msgspec.json.encode(report).decode())
    elif report.ok:
        print(f"ledger intact: {report.events} events in {report.chains} chains")
    else:
        found = report.first_break
        assert found is not None
        print(
            f"ledger BROKEN ({found.kind}) in the chain of subject {found.subject_id!r} ({found.chain_id}), "
            f"position {found.seq}{f', event {found.event_id}' if found.event_id else ''}: {found.detail}\n"
            f"{report.events} events in {report.chains} chains verified before the break",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


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


def _up(seed: bool) -> int:
    from tillit.demo import seed_demo

    os.environ.setdefault("TILLIT_DATA_DIR", str(load_settings("gateway").data_dir))
    # On a laptop, webhooks may go to a receiver on this machine over plain http.
    os.environ.setdefault("TILLIT_WEBHOOKS_ALLOW_INSECURE_LOOPBACK", "1")
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
    status = _preference_center_assets()
    if status:
        return status

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


def _preference_center_assets() -> int:
    """htmx for the shopper's pages, from the npm registry (``npm ci`` once, when it is missing)."""
    from preference_center.assets import ensure_assets

    try:
        ensure_assets()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"tillit up: cannot install the preference center's assets: {exc}", file=sys.stderr)
        return 1
    return 0


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
    key_actions = keys.add_subparsers(dest="action", required=True)
    key_actions.add_parser("init", help="create missing keys")
    rotate = key_actions.add_parser(
        "rotate",
        help="a new signing key; earlier public keys stay published while what they signed is still valid",
    )
    rotate.add_argument("name", choices=KEY_NAMES)
    rotate.add_argument(
        "--revoke-previous",
        action="store_true",
        help="drop every earlier public key now (it leaked): what it signed stops verifying at once",
    )
    add_policy_commands(commands)
    ledger = commands.add_parser("ledger", help="the consent ledger")
    verify = ledger.add_subparsers(dest="action", required=True).add_parser(
        "verify", help="walk every hash chain; exit 1 naming the first altered, missing or inserted event"
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    consents = commands.add_parser("consents", help="consent records")
    importing = consents.add_subparsers(dest="action", required=True).add_parser(
        "import", help="import consents collected elsewhere (CSV or NDJSON): every row or none; re-runs change nothing"
    )
    importing.add_argument("file", type=Path)
    importing.add_argument("--format", choices=("csv", "ndjson"), help="default: from the file name")
    add_receipt_commands(commands)
    add_request_commands(commands)
    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    match args.command:
        case "up":
            return _up(seed=not args.no_seed)
        case "serve":
            return _serve(args.component)
        case "keys" if args.action == "rotate":
            return _rotate_key(args.name, revoke_previous=args.revoke_previous)
        case "keys":
            _init_keys()
            return 0
        case "policy":
            return _policy_check() if args.action == "check" else run_policy_command(args)
        case "consents":
            return _consents_import(args.file, args.format)
        case "ledger":
            return _ledger_verify(args.json)
        case "receipt":
            return run_receipt_command(args)
        case "requests":
            return run_request_command(args)
        case "clients":
            return run_client_command(args)
    return 2
