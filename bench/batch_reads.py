"""CPU per batch read of the consent and preferences services, their apps driven in process.

Every profile release makes the gateway read consent states (``POST /v1/purposes/{p}/states``) and
profiles (``POST /v1/profiles/batch``) in batches of concurrent releases. This measures the services'
CPU per such request, without servers or a load client: each app is started (lifespan) on PostgreSQL
in this process, on uvloop as granian runs it, and its ASGI callable is given the request ``--iterations``
times; the figure is the best of ``--repeats`` of ``time.process_time()`` per request. Batches of 1, 4
and 16 subjects, each with a state (consent) or a profile of four fields (preferences).

``--against DIR`` measures the checkout in DIR too (another worktree, e.g. main), alternating rounds
between the two in fresh processes so that a shared machine's noise hits both alike::

    .venv/bin/python -m bench.batch_reads --against /work/main --rounds 3

Needs PostgreSQL at ``TILLIT_TEST_POSTGRES_URL`` (default 127.0.0.1:5432, database ``test``); its
schemas are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

__all__ = ["main"]

PROFILED: Final = "personalize.content.profiled"
SIZES: Final = (1, 4, 16)
_REPO: Final = Path(__file__).resolve().parent.parent

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def _cpu_per_request(
    app: Asgi, path: str, body: bytes, authorization: str, iterations: int, repeats: int
) -> float:
    """Best CPU µs per request of ``repeats`` runs of ``iterations`` requests; every answer a 200."""
    headers = [
        (b"host", b"service"),
        (b"authorization", authorization.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def once() -> None:
        # Built here, not by tillit.testing.http_scope: --against runs this against checkouts without it.
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        await app(scope, receive, send)

    for _ in range(100):
        await once()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(iterations):
            await once()
        best = min(best, (time.process_time() - start) / iterations)
    if set(statuses) != {200}:
        raise RuntimeError(f"answers other than 200: {sorted(set(statuses))}")
    return best * 1e6


async def _measure(iterations: int, repeats: int) -> dict[str, float]:
    from sqlalchemy import text

    from services.consent.app import create_app as create_consent
    from services.preferences.app import create_app as create_preferences
    from tillit.db import Database
    from tillit.keys import KEY_NAMES, SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
    from tillit.service_tokens import ServiceTokenIssuer
    from tillit.testing import POSTGRES_URL

    data = Path(tempfile.mkdtemp(prefix="bench-batch-reads-"))
    for name in [name for name in os.environ if name.startswith("TILLIT_") and name != "TILLIT_TEST_POSTGRES_URL"]:
        del os.environ[name]
    prefix = f"bench_{secrets.token_hex(4)}_"
    os.environ.update(
        TILLIT_DATA_DIR=str(data),
        TILLIT_LOG_LEVEL="WARNING",
        TILLIT_DATABASE_URL=POSTGRES_URL,
        TILLIT_DATABASE_SCHEMA_PREFIX=prefix,
    )
    for name in KEY_NAMES:
        ensure_signing_key(data / "keys", name)
    issuer = ServiceTokenIssuer(load_private_key(data / "keys", SERVICE_TOKEN_KEY))
    results: dict[str, float] = {}
    try:
        consent = create_consent()
        async with consent.lifespan(), _client(consent) as client:
            auth = issuer.headers_for("consent")
            for n in range(16):
                for action in ("give", "withdraw")[: 1 + (n % 3 == 0)]:
                    event = {"purpose": PROFILED, "action": action, "source": "preference_page"}
                    answer = await client.post(f"/v1/subjects/s{n}/events", json=event, headers=auth)
                    answer.raise_for_status()
            for size in SIZES:
                body = msgspec.json.encode({"subject_ids": [f"s{n}" for n in range(size)]})
                path = f"/v1/purposes/{PROFILED}/states"
                results[f"consent/{size}"] = await _cpu_per_request(
                    consent, path, body, auth["Authorization"], iterations, repeats
                )
        preferences = create_preferences()
        async with preferences.lifespan(), _client(preferences) as client:
            auth = issuer.headers_for("preferences")
            for n in range(16):
                fields = {
                    "first_name": f"Åsa {n}",
                    "sizes": {"tops": "M"},
                    "shoe_size": 38.5,
                    "favourite_brands": ["Acne"],
                }
                answer = await client.patch(
                    f"/v1/subjects/s{n}/profile", json={"fields": fields, "source": "import"}, headers=auth
                )
                answer.raise_for_status()
            for size in SIZES:
                body = msgspec.json.encode({"subject_ids": [f"s{n}" for n in range(size)]})
                results[f"preferences/{size}"] = await _cpu_per_request(
                    preferences, "/v1/profiles/batch", body, auth["Authorization"], iterations, repeats
                )
    finally:
        database = Database(POSTGRES_URL)
        async with database.engine.begin() as connection:
            for name in ("consent", "preferences"):
                await connection.execute(text(f'DROP SCHEMA IF EXISTS "{prefix}{name}" CASCADE'))
        await database.dispose()
    return results


def _client(app: Any) -> httpx.AsyncClient:
    """Seeding requests through the app in this loop (the test client would run it in another thread)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


def _run_measure(iterations: int, repeats: int) -> dict[str, float]:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_measure(iterations, repeats))


def _in_process(tree: Path, iterations: int, repeats: int) -> dict[str, float]:
    """One round in a fresh process importing the services from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, "-P", __file__, "--measure", "--iterations", str(iterations), "--repeats", str(repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return msgspec.json.decode(done.stdout.splitlines()[-1], type=dict[str, float])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout to measure in alternating rounds")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(msgspec.json.encode(_run_measure(args.iterations, args.repeats)).decode())
        return
    trees = {"this": _REPO, **({"against": args.against.resolve()} if args.against else {})}
    best: dict[str, dict[str, float]] = {name: {} for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for key, value in _in_process(tree, args.iterations, args.repeats).items():
                best[name][key] = min(best[name].get(key, float("inf")), value)
    print(f"CPU µs per batch request (best of {args.rounds} rounds x {args.repeats} x {args.iterations})")
    print(f"{'read/ids':<16}" + "".join(f"{f'{name} ({tree.name})':>22}" for name, tree in trees.items()))
    for key in best["this"]:
        row = "".join(f"{best[name][key]:>22.1f}" for name in trees)
        ratio = f"   this/against {best['this'][key] / best['against'][key]:.2f}" if args.against else ""
        print(f"{key:<16}{row}{ratio}")


if __name__ == "__main__":
    main()
