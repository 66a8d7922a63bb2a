"""The single profile release through the gateway against a bare Litestar endpoint, in one run.

Run from the repository root::

    .venv/bin/python -m bench.gateway [--json] [--seconds 5] [--rounds 4] [--concurrency 32] [--shoppers 2000]

(about two minutes with the defaults).

The whole platform runs on PostgreSQL (granian, one worker per process). ``--shoppers`` shoppers are
seeded straight into the services (a profile through ``PATCH``, a consent to
``personalize.content.profiled`` through the consent service), and a ``web`` channel client is created.
Four sides are then loaded in alternating rounds, each by its own keep-alive client in this process:

``release``
    ``GET /v1/subjects/{id}/profile?purpose=personalize.content.profiled`` on the gateway with the
    channel's access token: token check, the consent state and the profile from the two services (read
    in batches with the other releases under way, ``tillit/read_batch.py``), the release rule, one
    audit row committed (group commit). Every answer must release exactly the seeded values of the
    fields the purpose may use and withhold the others with their reasons.
``bare``
    The baseline: ``bench._bare_app``, a bare Litestar endpoint served the same way, answering a msgspec
    object built from a real release answer (same shape and size).
``consent``
    The consent service's single-subject state read (``GET /v1/subjects/{id}/consents``, service token):
    what a release read before its reads were batched, and what the shopper API and links still read.
``profile``
    The preferences service's single profile read (``GET /v1/subjects/{id}/profile``), likewise.

Ratios are side / ``bare`` of the same run. CPU milliseconds per request are given for every process
the side's requests run through (the release's also counts both services and PostgreSQL). Targets
print as PASS or MISS (a miss does not fail the run); a wrong or failed answer does (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec

from bench._baseline import serve_baseline
from bench._http1 import HTTP1Client
from bench._load import (
    SHIPPED_POLLING,
    Load,
    LoadResult,
    Target,
    alternate_rounds,
    fast_load_client,
    machine_info,
    merge,
    run,
    run_load,
)
from bench._report import command_line, emit_report, fmt, print_errors, print_machine
from bench.consent import (
    ERROR_EXAMPLES,
    PLAIN_DSN,
    Problems,
    PySpy,
    _descendants,
    _postmaster,
    _py_spy,
    _ratio,
    _status_problem,
    _verdict,
    log,
    read_check,
    summarize_profile,
)
from bench.preferences import profile_check, profile_fields
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError

__all__ = ["SIDES", "TARGETS", "main"]

PURPOSE: Final = "personalize.content.profiled"
CHANNEL: Final = "web"
PLATFORM_SETTINGS: Final = {"TILLIT_SERVER": "granian", "TILLIT_ACCESS_TOKEN_TTL": "3600", **SHIPPED_POLLING}
"""Granian, the shipped polling, and access tokens that outlast the run."""
SIDES: Final = ("release", "bare", "consent", "profile")
BASELINE: Final = "bare"
PROCESSES: Final = {
    "release": ("gateway", "consent", "preferences", "postgres"),
    "bare": ("bare",),
    "consent": ("consent", "postgres"),
    "profile": ("preferences", "postgres"),
}
"""Per side: the processes its requests run through, whose CPU time is measured."""
TARGETS: Final = {
    "release": {"throughput_ratio": 0.25, "throughput_ratio_floor": 0.15, "p99_ms": 30.0},
    "consent": {"throughput_rps": 4_000.0, "p99_ms": 20.0},
    "profile": {"throughput_rps": 4_000.0, "p99_ms": 20.0},
}


class _Withheld(msgspec.Struct):
    field: str
    reason: str


class _Release(msgspec.Struct):
    subject_id: str
    purpose: str
    fields: dict[str, Any]
    withheld: list[_Withheld]
    release_id: str


def shopper_fields(number: int, rng: random.Random) -> dict[str, Any]:
    """A profile with fields the purpose may use and fields it may not (contact data)."""
    return {
        **profile_fields(number, rng),
        "email": f"shopper{number}@example.com",
        "phone": f"+4670{number:07d}",
    }


def release_check(subject_id: str, released: Mapping[str, Any], withheld: Sequence[tuple[str, str]]) -> Any:
    """A 200 releasing exactly ``released`` and withholding exactly ``withheld`` (field, reason)."""
    wanted_withheld = sorted(withheld)

    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 200)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Release)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        if (body.subject_id, body.purpose) != (subject_id, PURPOSE) or body.fields != released:
            return f"{body.subject_id}/{body.purpose}: {body.fields}, expected {subject_id}: {dict(released)}"
        if sorted((w.field, w.reason) for w in body.withheld) != wanted_withheld:
            return f"withheld {body.withheld}, expected {wanted_withheld}"
        if len(body.release_id) != 36:
            return f"release id {body.release_id!r}"
        return None

    return check


def bare_check(subject_id: str) -> Any:
    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 200)
        if problem:
            return problem
        if msgspec.json.decode(response.content, type=_Release).subject_id != subject_id:
            return f"answer for another subject: {response.text[:200]}"
        return None

    return check


@dataclass
class Seeded:
    fields: dict[str, dict[str, Any]]
    event_ids: dict[str, str]
    seconds: float


async def seed(running: RunningPlatform, shoppers: int, concurrency: int, problems: Problems) -> Seeded:
    """Profiles and consents straight into the services, every answer checked."""
    rng = random.Random(5)
    subjects = [f"bench-shopper-{number:05d}" for number in range(shoppers)]
    fields = {subject: shopper_fields(number, rng) for number, subject in enumerate(subjects)}
    event_ids: dict[str, str] = {}
    failures: list[str] = []
    slots = asyncio.Semaphore(concurrency)
    preferences = {**running.service_headers("preferences"), "content-type": "application/json"}
    consent = {**running.service_headers("consent"), "content-type": "application/json"}
    consent_body = msgspec.json.encode({"purpose": PURPOSE, "action": "give", "source": "import"})
    started = time.perf_counter()
    async with fast_load_client(concurrency) as client:

        async def one(subject: str) -> None:
            async with slots:
                try:
                    answer = await client.request(
                        "PATCH",
                        f"{running.url('preferences')}/v1/subjects/{subject}/profile",
                        headers=preferences,
                        content=msgspec.json.encode({"fields": fields[subject], "source": "import"}),
                    )
                    problem = profile_check(subject, fields[subject])(answer)
                    if problem:
                        failures.append(f"PATCH profile {subject}: {problem}")
                        return
                    answer = await client.request(
                        "POST",
                        f"{running.url('consent')}/v1/subjects/{subject}/events",
                        headers=consent,
                        content=consent_body,
                    )
                except httpx.HTTPError as exc:
                    failures.append(f"{subject}: {type(exc).__name__}: {exc}")
                    return
            problem = _status_problem(answer, 201)
            if problem:
                failures.append(f"POST consent {subject}: {problem}")
                return
            state = answer.json()["state"]
            if state["status"] != "given":
                failures.append(f"POST consent {subject}: state {state}")
                return
            event_ids[subject] = state["event_id"]

        await asyncio.gather(*(one(subject) for subject in subjects))
    problems.add("seeding", len(failures), failures[:ERROR_EXAMPLES])
    await analyze_platform(running)
    return Seeded(fields, event_ids, time.perf_counter() - started)


async def analyze_platform(running: RunningPlatform) -> None:
    """``VACUUM ANALYZE`` every table of the platform's schemas, as autovacuum leaves a running shop.

    Freshly seeded tables have no statistics; without them PostgreSQL planned the batched consent
    read as a scan of every state of the purpose (0.24 ms for 4 keys instead of 0.04 ms), and when
    autovacuum analysed the tables mid-run, the rounds of one run disagreed.
    """
    prefix = running.env.get("TILLIT_DATABASE_SCHEMA_PREFIX")
    if not prefix:
        return
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        tables = await connection.fetch(
            "SELECT schemaname, tablename FROM pg_tables WHERE starts_with(schemaname, $1)", prefix
        )
        for schema, table in tables:
            await connection.execute(f'VACUUM ANALYZE "{schema}"."{table}"')
    finally:
        await connection.close()


def bare_app(body: bytes, log_path: Path) -> AbstractContextManager[tuple[str, int]]:
    """``bench._bare_app`` in its own process, served like a tillit component; (url, pid)."""
    return serve_baseline("bench._bare_app", {"BENCH_BARE_BODY": body.decode()}, log_path)


@dataclass
class Context:
    args: argparse.Namespace
    running: RunningPlatform
    seeded: Seeded
    bare_url: str
    pids: dict[str, int]
    problems: Problems = field(default_factory=Problems)
    sample: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)


def targets(context: Context) -> dict[str, list[Target]]:
    running, seeded = context.running, context.seeded
    released_keys = set(context.sample["fields"])
    withheld = [(w["field"], w["reason"]) for w in context.sample["withheld"]]
    auth = running.auth(CHANNEL)
    consent_headers = running.service_headers("consent")
    preferences_headers = running.service_headers("preferences")
    order = sorted(seeded.event_ids)
    random.Random(11).shuffle(order)
    query = f"?purpose={PURPOSE}"
    return {
        "release": [
            Target(
                f"{running.gateway}/v1/subjects/{s}/profile{query}",
                release_check(s, {k: v for k, v in seeded.fields[s].items() if k in released_keys}, withheld),
                auth,
            )
            for s in order
        ],
        "bare": [Target(f"{context.bare_url}/bare/subjects/{s}/profile{query}", bare_check(s)) for s in order],
        "consent": [
            Target(
                f"{running.url('consent')}/v1/subjects/{s}/consents",
                read_check(s, [(PURPOSE, "given", seeded.event_ids[s])]),
                consent_headers,
            )
            for s in order
        ],
        "profile": [
            Target(
                f"{running.url('preferences')}/v1/subjects/{s}/profile",
                profile_check(s, seeded.fields[s]),
                preferences_headers,
            )
            for s in order
        ],
    }


def cycling(client: HTTP1Client, side_targets: Sequence[Target], concurrency: int) -> Load:
    offset = 0

    async def load(seconds: float, pids: Callable[[], dict[str, int]] | None) -> LoadResult:
        nonlocal offset
        result = await run_load(
            client,
            [*side_targets[offset:], *side_targets[:offset]],
            concurrency=concurrency,
            seconds=seconds,
            server_pids=pids,
        )
        offset = (offset + result.requests) % len(side_targets)
        return result

    return load


async def measure(context: Context) -> dict[str, list[LoadResult]]:
    args = context.args
    by_side = targets(context)
    async with AsyncExitStack() as stack:
        loads: dict[str, Load] = {}
        for side in SIDES:
            client = await stack.enter_async_context(fast_load_client(args.concurrency))
            loads[side] = cycling(client, by_side[side], args.concurrency)

        def pids_of(side: str) -> Callable[[], dict[str, int]]:
            return lambda: {name: context.pids[name] for name in PROCESSES[side] if name in context.pids}

        results = await alternate_rounds(
            loads,
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            server_pids=pids_of,
            record=context.problems.add_result,
            log=log,
        )
        if args.profile:
            context.profile = await profile_release(context, loads["release"])
    return results


async def profile_release(
    context: Context, load: Callable[[float, Callable[[], dict[str, int]] | None], Awaitable[LoadResult]]
) -> dict[str, Any]:
    """py-spy on the gateway's and both services' workers at once under release load (not used for ratios)."""
    executable = _py_spy()
    if executable is None:
        log("py-spy is not installed; no profile (pip install py-spy)")
        return {}
    directory = Path(context.args.profile)
    spies = {}
    for name in ("gateway", "consent", "preferences"):
        workers = _descendants(context.pids[name]) or {context.pids[name]: 0}
        worker = max(workers, key=lambda pid: workers[pid])
        spies[name] = PySpy(executable, worker, directory / f"{name}-release.txt")
    log(f"profiling      release  py-spy on gateway, consent, preferences -> {directory}")
    await asyncio.sleep(1.0)  # attached before the load starts
    try:
        context.problems.add_result("profile release", await load(context.args.profile_seconds, None))
    finally:
        for spy in spies.values():
            spy.stop()
    return {name: summarize_profile(spy.output) for name, spy in spies.items()}


def build_report(
    measured: Mapping[str, list[LoadResult]], context: Context, machine: dict[str, Any], command: str
) -> dict[str, Any]:
    args = context.args
    results: dict[str, Any] = {}
    baseline = measured[BASELINE]
    for side in SIDES:
        rounds = measured[side]
        if not rounds:
            continue
        merged = merge(rounds)
        results[side] = {
            "requests": merged.requests,
            "throughput_rps": round(merged.throughput, 1),
            "round_throughputs_rps": [round(one.throughput, 1) for one in rounds],
            "p50_ms": round(merged.latency_ms(0.50), 3),
            "p99_ms": round(merged.latency_ms(0.99), 3),
            "max_ms": round(merged.latency_ms(1.0), 3),
            "cpu_ms_per_request": {
                name: round(ms, 3) for name, ms in (merged.server_cpu_per_request_ms_by_process() or {}).items()
            },
            "client_cpu_share": round(merged.client_cpu_share, 3),
            "ratio_to_bare": _ratio(merged.throughput, merge(baseline).throughput),
            "round_ratios_to_bare": [
                _ratio(one.throughput, other.throughput) for one, other in zip(rounds, baseline, strict=True)
            ],
        }
    verdicts: list[dict[str, Any]] = []

    def judge(side: str, metric: str, value: float | None, target: float, at_least: bool) -> None:
        verdicts.append(
            {
                "scenario": side,
                "metric": metric,
                "target": f"{'>=' if at_least else '<='} {target:g}",
                "value": value,
                "verdict": _verdict(value, target, at_least),
            }
        )

    if "release" in results:
        release = TARGETS["release"]
        ratio = results["release"]["ratio_to_bare"]
        judge("release", "throughput / bare", ratio, release["throughput_ratio"], True)
        judge("release", "throughput / bare (floor)", ratio, release["throughput_ratio_floor"], True)
        judge("release", "p99 ms", results["release"]["p99_ms"], release["p99_ms"], False)
    for side in ("consent", "profile"):
        if side in results:
            judge(side, "req/s", results[side]["throughput_rps"], TARGETS[side]["throughput_rps"], True)
            judge(side, "p99 ms", results[side]["p99_ms"], TARGETS[side]["p99_ms"], False)
    return {
        "benchmark": "gateway",
        "command": command,
        "machine": machine,
        "settings": {
            "backend": "postgres",
            "server": "granian, 1 worker per process (platform and bare app alike)",
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "shoppers": args.shoppers,
            "purpose": PURPOSE,
            "answer_bytes": len(msgspec.json.encode(context.sample)),
            "seed_seconds": round(context.seeded.seconds, 2),
        },
        "results": results,
        "targets": verdicts,
        "profile": context.profile,
        "errors": {
            "total": context.problems.total,
            "by_phase": context.problems.counts,
            "examples": context.problems.examples,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print_machine(report, "single profile release through the gateway vs a bare Litestar endpoint (same run)")
    print(
        f"settings: {settings['rounds']} rounds x {settings['seconds']:g}s per side, alternating; warm-up "
        f"{settings['warmup_seconds']:g}s; concurrency {settings['concurrency']}; {settings['shoppers']} shoppers "
        f"(seeded in {settings['seed_seconds']:g} s); purpose {settings['purpose']}; answer "
        f"{settings['answer_bytes']} bytes; {settings['server']}"
    )
    print()
    header = (
        f"{'side':<9}{'req/s':>7}  {'per round':<24}{'/bare':>6}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}"
        f"{'client':>7}  CPU ms/req by process"
    )
    print(header)
    print("-" * len(header))
    for side, row in report["results"].items():
        rounds = " ".join(f"{value:.0f}" for value in row["round_throughputs_rps"])
        cpu = " ".join(f"{name} {ms:.2f}" for name, ms in row["cpu_ms_per_request"].items())
        print(
            f"{side:<9}{row['throughput_rps']:>7.0f}  {rounds:<24}{fmt(row['ratio_to_bare'], '>6.2f')}"
            f"{row['p50_ms']:>8.1f}{row['p99_ms']:>8.1f}{row['max_ms']:>8.1f}{row['client_cpu_share']:>7.2f}  {cpu}"
        )
    ratios = " ".join(f"{value:.2f}" for value in report["results"].get("release", {}).get("round_ratios_to_bare", []))
    print(f"release/bare per round: {ratios}")
    print("(postgres = the whole PostgreSQL server, shared with anything else using it; client = this process)")
    print()
    print("targets")
    for verdict in report["targets"]:
        value = verdict["value"]
        shown = "-" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")
        label = f"{verdict['verdict']:<5}{verdict['scenario']:<9}{verdict['metric']:<28}"
        print(f"  {label}{shown:>12}  ({verdict['target']})")
    if report.get("profile"):
        print_profile(report["profile"])
    print_errors(report)


def print_profile(profile: Mapping[str, Any]) -> None:
    print()
    print("py-spy under release load (GIL-holding samples; not used for ratios)")
    for name, summary in profile.items():
        if not summary.get("samples"):
            continue
        print(f"  {name}: {summary['samples']} samples")
        for title, key, count in (
            ("self by package", "self_by_package_pct", 10),
            ("inclusive by function", "inclusive_by_function_pct", 25),
        ):
            print(f"    {title}:")
            for function, pct in list(summary[key].items())[:count]:
                print(f"      {pct:5.1f}%  {function}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measured load round (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="load rounds per side (default 4; even balances order)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per side (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--shoppers", type=int, default=2_000, help="shoppers seeded and released (default 2000)")
    parser.add_argument("--profile", metavar="DIR", help="afterwards, py-spy every process under release load")
    parser.add_argument("--profile-seconds", type=float, default=8.0, help="length of the profiled load (default 8)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be > 0, --warmup >= 0")
    if min(args.rounds, args.concurrency, args.shoppers) < 1:
        parser.error("--rounds, --concurrency and --shoppers must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every answer was the expected one (targets met or not), 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not postgres_available():
        log("PostgreSQL does not answer on 127.0.0.1:5432")
        return 1
    machine = machine_info(("granian", "litestar", "sqlalchemy", "asyncpg", "msgspec", "uvloop", "httpx", "aiohttp"))
    problems = Problems()
    try:
        with tempfile.TemporaryDirectory(prefix="tillit-bench-gateway-") as tmp, ExitStack() as stack:
            log("starting the platform (postgres, granian)")
            running = stack.enter_context(running_platform("postgres", Path(tmp) / "platform", PLATFORM_SETTINGS))
            running.add_channel(CHANNEL, ["profiles:read"])
            log(f"seeding {args.shoppers} shoppers (profile and consent)")
            seeded = run(seed(running, args.shoppers, args.concurrency, problems))
            if not seeded.event_ids:
                raise RuntimeError("no shopper was seeded")
            first = sorted(seeded.event_ids)[0]
            answer = httpx.get(
                f"{running.gateway}/v1/subjects/{first}/profile",
                params={"purpose": PURPOSE},
                headers=running.auth(CHANNEL),
            )
            answer.raise_for_status()
            sample = answer.json()
            if not sample["fields"] or not sample["withheld"]:
                raise RuntimeError(f"the sample release should release and withhold fields: {sample}")
            log("starting the bare app (granian)")
            bare_url, bare_pid = stack.enter_context(bare_app(answer.content, Path(tmp) / "bare_app.log"))
            pids = {name: running.platform.processes[name].pid for name in ("gateway", "consent", "preferences")}
            pids["bare"] = bare_pid
            postmaster = run(_postmaster())
            if postmaster is not None:
                pids["postgres"] = postmaster
            context = Context(args, running, seeded, bare_url, pids, problems, sample)
            if args.profile:
                Path(args.profile).mkdir(parents=True, exist_ok=True)
            measured = run(measure(context))
            log("stopping")
    except (PlatformError, OSError, asyncpg.PostgresError, httpx.HTTPError, RuntimeError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    report = build_report(measured, context, machine, command_line("bench.gateway", argv))
    return emit_report(report, args.json, print_report, problems.total)


if __name__ == "__main__":
    raise SystemExit(main())
