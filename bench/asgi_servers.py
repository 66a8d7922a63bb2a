"""granian vs uvicorn serving tillit's real platform, measured side by side in one run.

Run from the repository root::

    .venv/bin/python -m bench.asgi_servers [--backend postgres] [--seconds 4] [--rounds 4] [--concurrency 16] [--json]

The whole platform is started twice as real processes, once per server (``TILLIT_SERVER``, one worker
per process), and both stay up on their own ports. Load alternates between them in short rounds, in
the order uvicorn, granian, then granian, uvicorn, and so on, so that a noisy neighbour or a slow drift
of the machine hits both servers alike instead of whichever happened to run during it. Two scenarios:

``release``
    ``GET /v1/subjects/{id}/profile?purpose=marketing.communications.email`` with a bearer token: the real
    path, gateway -> consent and preferences services -> audit write. Every answer must be a 200 that
    releases the shopper's profile.
``live``
    ``GET /health/live`` on the gateway: a trivial handler, i.e. the per-request cost of the server and
    Litestar alone.

uvicorn is the baseline; the ratios are granian / uvicorn, from numbers of the same run. Throughput is
pooled over the rounds, latency percentiles over all requests of all rounds. Server CPU per request (all
processes of the platform with their children, from ``/proc``; not the PostgreSQL server's) is shown too
because it varies less than throughput when other tenants take the CPU. The load generator runs in this
process and takes cores from the servers; its share of a core is printed so that the numbers can be read
with that in mind, and a scenario where it, not the servers, is the bottleneck is pointed out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from bench._load import (
    SHIPPED_POLLING,
    Check,
    LoadError,
    LoadResult,
    Target,
    load_client,
    machine_info,
    merge,
    run,
    run_load,
)
from bench._report import emit_report
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError

__all__ = ["BASELINE", "SCENARIOS", "SERVERS", "main"]

SERVERS: Final = ("uvicorn", "granian")
BASELINE: Final = "uvicorn"
CANDIDATE: Final = "granian"
SCENARIOS: Final = ("release", "live")
PURPOSE: Final = "marketing.communications.email"
CHANNEL: Final = "email"
SCOPES: Final = ["profiles:read", "consents:write"]
CLIENT_BOUND_SHARE: Final = 0.75
"""When the load generator uses this much of its one core (a single asyncio loop), and more CPU than the
servers it loads, it is what limits throughput: the servers wait for requests."""
STARTUP_SECONDS: Final = 30.0
"""A generous estimate of starting both platforms, only used to keep access tokens valid for the run."""


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` output on stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Served:
    """One platform running on one server, with the requests the scenarios repeat against it."""

    server: str
    running: RunningPlatform
    targets: dict[str, list[Target]]
    client: httpx.AsyncClient | None = None
    results: dict[str, list[LoadResult]] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {component: process.pid for component, process in self.running.platform.processes.items()}


def profile_of(number: int) -> dict[str, Any]:
    return {"email": f"shopper{number}@example.com", "first_name": f"Shopper{number}", "shoe_size": 36 + number % 10}


def release_check(expected: dict[str, Any]) -> Check:
    def check(response: httpx.Response) -> str | None:
        if response.status_code != 200:
            return f"status {response.status_code}: {response.text[:300]}"
        body = response.json()
        if body.get("fields") != expected:
            return f"released {body.get('fields')!r}, expected {expected!r}"
        if not body.get("release_id"):
            return "no release_id"
        return None

    return check


def live_check(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:300]}"
    if response.json() != {"status": "ok"}:
        return f"unexpected body {response.text[:300]!r}"
    return None


def prepare(server: str, running: RunningPlatform, subjects: int) -> Served:
    """A channel with a token and ``subjects`` shoppers who gave consent to e-mail marketing."""
    running.add_channel(CHANNEL, SCOPES)
    auth = running.auth(CHANNEL)
    release = []
    for number in range(subjects):
        profile = profile_of(number)
        subject_id = running.new_shopper(profile, consents=((PURPOSE, "give"),))
        url = f"{running.gateway}/v1/subjects/{subject_id}/profile?purpose={PURPOSE}"
        release.append(Target(url, release_check(profile), auth))
    live = [Target(f"{running.gateway}/health/live", live_check)]
    return Served(server, running, {"release": release, "live": live})


async def measure(platforms: Sequence[Served], args: argparse.Namespace) -> None:
    """Warm every server up, then the rounds; each round alternates which server goes first."""
    async with AsyncExitStack() as stack:
        for served in platforms:
            served.client = await stack.enter_async_context(load_client(args.concurrency))
        for scenario in SCENARIOS:
            for served in platforms:
                assert served.client is not None
                log(f"warm-up   {scenario:<8} {served.server:<8} {args.warmup:g}s")
                warm = await run_load(
                    served.client, served.targets[scenario], concurrency=args.concurrency, seconds=args.warmup
                )
                warm.raise_for_errors(f"warm-up of {scenario} on {served.server}")
        for number in range(args.rounds):
            order = platforms if number % 2 == 0 else list(reversed(platforms))
            for scenario in SCENARIOS:
                for served in order:
                    assert served.client is not None
                    result = await run_load(
                        served.client,
                        served.targets[scenario],
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                        server_pids=served.pids,
                    )
                    result.raise_for_errors(f"round {number + 1} of {scenario} on {served.server}")
                    served.results.setdefault(scenario, []).append(result)
                    log(
                        f"round {number + 1}/{args.rounds} {scenario:<8} {served.server:<8} "
                        f"{result.throughput:8.0f} req/s  p99 {result.latency_ms(0.99):6.1f} ms"
                    )


def _ratio(candidate: float | None, baseline: float | None) -> float | None:
    """``candidate / baseline`` rounded for the report; None when either is unknown."""
    if candidate is None or baseline is None or not baseline:
        return None
    return round(candidate / baseline, 3)


def summarize(result: LoadResult, rounds: Sequence[LoadResult]) -> dict[str, Any]:
    cpu = result.server_cpu_per_request_ms
    by_process = result.server_cpu_per_request_ms_by_process() or {}
    cores = result.server_cpu_share
    return {
        "requests": result.requests,
        "errors": result.errors,
        "seconds": round(result.elapsed, 3),
        "throughput_rps": round(result.throughput, 1),
        "round_throughputs_rps": [round(one.throughput, 1) for one in rounds],
        "p50_ms": round(result.latency_ms(0.50), 3),
        "p99_ms": round(result.latency_ms(0.99), 3),
        "max_ms": round(result.latency_ms(1.0), 3),
        "server_cpu_ms_per_request": None if cpu is None else round(cpu, 3),
        "server_cpu_ms_per_request_by_process": {name: round(ms, 3) for name, ms in by_process.items() if ms},
        "server_cores": None if cores is None else round(cores, 3),
        "client_cpu_share": round(result.client_cpu_share, 3),
        "client_bound": result.client_cpu_share >= CLIENT_BOUND_SHARE
        and (cores is None or cores < result.client_cpu_share),
    }


def build_report(platforms: Sequence[Served], args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Any]:
    by_server = {served.server: served for served in platforms}
    results: dict[str, dict[str, Any]] = {}
    ratios: dict[str, dict[str, Any]] = {}
    for scenario in SCENARIOS:
        merged = {server: merge(by_server[server].results[scenario]) for server in SERVERS}
        results[scenario] = {
            server: summarize(merged[server], by_server[server].results[scenario]) for server in SERVERS
        }
        candidate, baseline = merged[CANDIDATE], merged[BASELINE]
        pairs = zip(by_server[CANDIDATE].results[scenario], by_server[BASELINE].results[scenario], strict=True)
        per_round = [_ratio(mine.throughput, theirs.throughput) for mine, theirs in pairs]
        ratios[scenario] = {
            "throughput": _ratio(candidate.throughput, baseline.throughput),
            "p50": _ratio(candidate.latency_ms(0.50), baseline.latency_ms(0.50)),
            "p99": _ratio(candidate.latency_ms(0.99), baseline.latency_ms(0.99)),
            "server_cpu_per_request": _ratio(candidate.server_cpu_per_request_ms, baseline.server_cpu_per_request_ms),
            "round_throughputs": [ratio for ratio in per_round if ratio is not None],
        }
    return {
        "benchmark": "asgi_servers",
        "baseline": BASELINE,
        "candidate": CANDIDATE,
        "machine": machine,
        "settings": {
            "backend": args.backend,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "subjects": args.subjects,
            "workers_per_process": 1,
            "client": "httpx.AsyncClient, HTTP/1.1 keep-alive, same process as the benchmark",
        },
        "results": results,
        "ratios": ratios,
    }


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_report(report: dict[str, Any]) -> None:
    machine, settings = report["machine"], report["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    load = " ".join(f"{value:g}" for value in machine["load_average"] or [])
    print(f"ASGI servers: {CANDIDATE} vs {BASELINE} (baseline) serving tillit on {settings['backend']}")
    print(
        f"machine : {machine['cpu_count']} CPUs ({machine['usable_cpus']} usable), {machine['cpu_model']}, "
        f"load avg at start {load}; {machine['system']}, Python {machine['python']}"
    )
    print(f"versions: {versions}")
    print(
        f"settings: {settings['rounds']} rounds x {settings['seconds']:g}s per server and scenario, alternating; "
        f"warm-up {settings['warmup_seconds']:g}s; concurrency {settings['concurrency']}; "
        f"{settings['subjects']} subjects; 1 worker per process; client: httpx HTTP/1.1 in this process"
    )
    print()
    header = (
        f"{'scenario':<9}{'server':<9}{'req/s':>7}  {'per round':<18}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>9}"
        f"{'srv CPU ms/req':>16}{'srv cores':>11}{'client core':>13}{'requests':>10}"
    )
    print(header)
    print("-" * len(header))
    for scenario, by_server in report["results"].items():
        for server in SERVERS:
            row = by_server[server]
            rounds = " ".join(f"{value:.0f}" for value in row["round_throughputs_rps"])
            print(
                f"{scenario:<9}{server:<9}{row['throughput_rps']:>7.0f}  {rounds:<18}{row['p50_ms']:>8.1f}"
                f"{row['p99_ms']:>9.1f}{row['max_ms']:>9.1f}{_fmt(row['server_cpu_ms_per_request'], '>16.3f')}"
                f"{_fmt(row['server_cores'], '>11.2f')}{row['client_cpu_share']:>13.2f}{row['requests']:>10}"
            )
    print()
    print(f"server CPU ms/req by process ({' / '.join(SERVERS)}):")
    for scenario, by_server in report["results"].items():
        split = [by_server[server]["server_cpu_ms_per_request_by_process"] for server in SERVERS]
        busy = {name for one in split for name, ms in one.items() if ms >= 0.005}  # idle processes say nothing
        processes = sorted(busy, key=lambda name: -split[0].get(name, 0.0))
        parts = "  ".join(f"{name} " + " / ".join(f"{one.get(name, 0.0):.2f}" for one in split) for name in processes)
        print(f"  {scenario:<9}{parts or '-'}")
    print()
    header = f"{CANDIDATE}/{BASELINE:<10}{'req/s':>8}{'p50':>8}{'p99':>8}{'CPU/req':>9}  per-round req/s ratios"
    print(header)
    print("-" * len(header))
    for scenario, ratio in report["ratios"].items():
        rounds = " ".join(f"{value:.2f}" for value in ratio["round_throughputs"])
        print(
            f"{scenario:<18}{_fmt(ratio['throughput'], '>7.2f', 'x')}{_fmt(ratio['p50'], '>7.2f', 'x')}"
            f"{_fmt(ratio['p99'], '>7.2f', 'x')}{_fmt(ratio['server_cpu_per_request'], '>8.2f', 'x')}  {rounds}"
        )
    print("(req/s above 1x: granian serves more; p50, p99 and CPU/req below 1x: granian is faster / cheaper)")
    bound = [
        scenario
        for scenario, by_server in report["results"].items()
        if any(row["client_bound"] for row in by_server.values())
    ]
    if bound:
        print(
            f"note: in {', '.join(bound)} the load generator (same process, most of a core) is the bottleneck, "
            "not the servers; req/s and latency there say little about the server, CPU/req does."
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.asgi_servers", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of one measured round (default 4)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="rounds per server and scenario (default 4; even keeps the order balanced)",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per server and scenario (default 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    parser.add_argument("--subjects", type=int, default=32, help="shoppers the release requests cycle through")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.warmup < 0 or args.concurrency < 1 or args.subjects < 1:
        parser.error("--seconds must be > 0, --warmup >= 0, --rounds, --concurrency and --subjects >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every request was answered as expected, 1 when any failed."""
    args = parse_args(argv)
    if args.backend == "postgres" and not postgres_available():
        log("PostgreSQL does not answer on 127.0.0.1:5432")
        return 1
    machine = machine_info(("granian", "uvicorn", "uvloop", "httptools", "litestar", "httpx"))
    run_seconds = len(SERVERS) * len(SCENARIOS) * (args.warmup + args.rounds * args.seconds)
    # Tokens must outlive the run; the default TTL (300 s) would expire during a long one.
    token_ttl = int(STARTUP_SECONDS + 2 * run_seconds) + 300
    platforms: list[Served] = []
    try:
        with tempfile.TemporaryDirectory(prefix="tillit-bench-") as tmp, ExitStack() as stack:
            for server in SERVERS:
                log(f"starting the platform on {server} ({args.backend})")
                running = stack.enter_context(
                    running_platform(
                        args.backend,
                        Path(tmp) / server,
                        {"TILLIT_SERVER": server, "TILLIT_ACCESS_TOKEN_TTL": str(token_ttl), **SHIPPED_POLLING},
                    )
                )
                platforms.append(prepare(server, running, args.subjects))
            run(measure(platforms, args))
            log("stopping the platforms")
    except (LoadError, PlatformError) as exc:
        log(f"FAILED: {exc}")
        return 1
    report = build_report(platforms, args, machine)
    return emit_report(report, args.json, print_report)


if __name__ == "__main__":
    raise SystemExit(main())
