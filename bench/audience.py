"""Benchmark of the audience export: the whole audience streamed through the gateway on PostgreSQL.

Seeds ``--subjects`` shoppers (default 1,000,000) straight into the PostgreSQL schemas of the
consent service (``consent_state``: ``--consented`` of them with a given e-mail consent, some
withdrawn, the rest none) and the preferences service (``profile_subject`` and six
``profile_value`` rows each) with ``COPY``, starts every process on PostgreSQL, then alternates:

- **baseline** — ``COPY (SELECT ...) TO STDOUT`` of the same rows the audience holds: the consent
  state joined with each subject's profile folded into one JSON object, in subject order, straight
  from PostgreSQL with no HTTP, policy or audit;
- **gateway** — ``GET /v1/audiences/marketing.communications.email?format=ndjson`` as the e-mail
  channel, read to the end: every line counted, the end line must say complete with the seeded
  number of subjects, and the audit must hold one row per subject listed.

While the gateway streams, the resident memory of its worker (``VmRSS``, and ``VmHWM`` at the end)
is sampled from ``/proc``; "flat" means the second half of the stream never rose more than 10% +
10 MB over the first half's peak. Targets: ≥ 50,000 profiles/s and a peak RSS ≤ 150 MB.

    .venv/bin/python -m bench.audience [--subjects 1000000] [--rounds 1] [--json]
    .venv/bin/python -m bench.audience --subjects 2000      # smoke run, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx

from bench._load import SHIPPED_POLLING, machine_info, process_tree_cpu_seconds
from bench._report import command_line, emit_report, print_machine
from bench.consent import PySpy, _py_spy, postmaster_pid, summarize_profile
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError
from tillit.testing import POSTGRES_URL

__all__ = ["TARGETS", "main"]

PURPOSE: Final = "marketing.communications.email"
TARGETS: Final = {"profiles_per_second": 50_000.0, "peak_rss_mb": 150.0}
PLAIN_DSN: Final = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
SEED_BATCH: Final = 50_000
BRANDS: Final = ("Filippa K", "Acne Studios", "Arket", "COS", "Hope", "Tiger of Sweden", "Nudie Jeans")
LANGUAGES: Final = ("en", "sv", "nb", "et")
BASELINE_QUERY: Final = """
    SELECT s.subject_id, s.event_id, s.expires_at, p.fields
    FROM "{consent}".consent_state s
    JOIN LATERAL (
        SELECT json_object_agg(v.field, v.value ORDER BY v.field) AS fields
        FROM "{preferences}".profile_value v WHERE v.subject_id = s.subject_id
    ) p ON p.fields IS NOT NULL
    WHERE s.purpose = '{purpose}' AND s.status = 'given' AND (s.expires_at IS NULL OR s.expires_at > now())
    ORDER BY s.subject_id
"""
"""Sent as ``COPY (<this>) TO STDOUT`` by asyncpg's ``copy_from_query``."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audience", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000, help="shoppers seeded (default 1,000,000)")
    parser.add_argument("--consented", type=float, default=0.8, help="share with a given consent (default 0.8)")
    parser.add_argument("--rounds", type=int, default=1, help="gateway streams, each between two baselines")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the gateway's and both services' workers during the last stream"
    )
    return parser.parse_args(argv)


# --- seeding ---------------------------------------------------------------------------------------


def _profile_rows(number: int, subject: str, now: datetime) -> list[tuple[Any, ...]]:
    values = {
        "email": f"shopper{number}@example.com",
        "first_name": f"Name{number % 997}",
        "phone": f"+4670{number:07d}",
        "preferred_language": LANGUAGES[number % 4],
        "shoe_size": 36 + number % 10,
        "favourite_brands": [BRANDS[number % 7], BRANDS[(number * 3 + 1) % 7]],
    }
    return [(subject, name, json.dumps(value), "import", now) for name, value in values.items()]


async def seed(connection: asyncpg.Connection, consent: str, preferences: str, args: argparse.Namespace) -> int:
    """Copy the shoppers in; the number whose consent counts (the audience's size)."""
    now = datetime.now(UTC)
    expires = now + timedelta(days=700)
    consented = withdrawn_every = 0
    cutoff = int(args.consented * 1000)
    for start in range(0, args.subjects, SEED_BATCH):
        subjects: list[tuple[Any, ...]] = []
        values: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        for number in range(start, min(start + SEED_BATCH, args.subjects)):
            subject = f"s{number:09d}"
            subjects.append((subject, 1, now))
            values += _profile_rows(number, subject, now)
            bucket = (number * 7919) % 1000  # spread consent over the key range
            if bucket < cutoff:
                states.append((subject, PURPOSE, "given", now, str(uuid.uuid4()), 1, expires))
                consented += 1
            elif bucket < cutoff + 50:
                states.append((subject, PURPOSE, "withdrawn", now, str(uuid.uuid4()), 1, None))
                withdrawn_every += 1
        await connection.copy_records_to_table(
            "profile_subject",
            records=subjects,
            columns=("subject_id", "version", "updated_at"),
            schema_name=preferences,
        )
        await connection.copy_records_to_table(
            "profile_value",
            records=values,
            columns=("subject_id", "field", "value", "source", "updated_at"),
            schema_name=preferences,
        )
        await connection.copy_records_to_table(
            "consent_state",
            records=states,
            columns=("subject_id", "purpose", "status", "since", "event_id", "notice_version", "expires_at"),
            schema_name=consent,
        )
    for schema, table in ((preferences, "profile_subject"), (preferences, "profile_value"), (consent, "consent_state")):
        await connection.execute(f'VACUUM ANALYZE "{schema}".{table}')
    return consented


# --- measuring -------------------------------------------------------------------------------------


async def baseline(connection: asyncpg.Connection, consent: str, preferences: str) -> dict[str, Any]:
    rows = 0
    size = 0

    async def count(chunk: bytes) -> None:
        nonlocal rows, size
        rows += chunk.count(b"\n")
        size += len(chunk)

    query = BASELINE_QUERY.format(consent=consent, preferences=preferences, purpose=PURPOSE)
    started = time.perf_counter()
    await connection.copy_from_query(query, output=count)
    seconds = time.perf_counter() - started
    return {"rows": rows, "bytes": size, "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 1)}


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found.append(pid)
                frontier.append(pid)
    return found


def _memory_kb(pid: int) -> dict[str, int]:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            status[key] = int(value.split()[0])
    return status


@contextmanager
def rss_sampler(root: int, interval: float = 0.1) -> Iterator[list[tuple[float, int]]]:
    """Samples (seconds, RSS kB) of the gateway's biggest process (granian's worker) while the block runs."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    pids = [root, *_descendants(root)]
    started = time.perf_counter()

    def sample() -> None:
        while not stop.is_set():
            sizes = []
            for pid in pids:
                try:
                    sizes.append(_memory_kb(pid).get("VmRSS", 0))
                except OSError:
                    continue
            samples.append((time.perf_counter() - started, max(sizes, default=0)))
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def gateway_worker_hwm_kb(root: int) -> int:
    peaks = []
    for pid in [root, *_descendants(root)]:
        try:
            peaks.append(_memory_kb(pid).get("VmHWM", 0))
        except OSError:
            continue
    return max(peaks, default=0)


def stream_audience(running: RunningPlatform, expected: int, cpu_roots: dict[str, int]) -> dict[str, Any]:
    gateway_pid = running.platform.processes["gateway"].pid
    cpu_before = process_tree_cpu_seconds(cpu_roots) or {}
    lines = 0
    size = 0
    tail = b""
    with rss_sampler(gateway_pid) as samples, httpx.Client(timeout=120.0) as client:
        started = time.perf_counter()
        first_byte = None
        with client.stream(
            "GET",
            f"{running.gateway}/v1/audiences/{PURPOSE}",
            params={"format": "ndjson"},
            headers=running.auth("email"),
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"the gateway answered {response.status_code}: {response.read()[:500]!r}")
            for chunk in response.iter_bytes():
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                lines += chunk.count(b"\n")
                size += len(chunk)
                tail = (tail + chunk)[-2000:]
        seconds = time.perf_counter() - started
    cpu_after = process_tree_cpu_seconds(cpu_roots) or {}
    last = json.loads(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    problem = None
    if "end" not in last or not last["end"]["complete"] or last["end"]["subjects"] != expected:
        problem = f"expected a complete audience of {expected}, the last line was {last}"
    elif lines != expected + 1:
        problem = f"{lines} lines for {expected} subjects"
    half = len(samples) // 2
    first_peak = max((kb for _, kb in samples[:half]), default=0)
    second_peak = max((kb for _, kb in samples[half:]), default=0)
    return {
        "subjects": expected if problem is None else lines - 1,
        "bytes": size,
        "seconds": round(seconds, 3),
        "first_byte_seconds": round(first_byte or 0.0, 3),
        "profiles_per_second": round((lines - 1) / seconds, 1),
        "rss_mb_first_half_peak": round(first_peak / 1024, 1),
        "rss_mb_second_half_peak": round(second_peak / 1024, 1),
        "rss_flat": second_peak <= first_peak * 1.1 + 10 * 1024,
        "release_id": last.get("end", {}).get("release_id"),
        "cpu_us_per_profile": {
            name: round(1e6 * (cpu_after[name] - cpu_before[name]) / max(lines - 1, 1), 2) for name in cpu_after
        },
        "problem": problem,
    }


async def audited(connection: asyncpg.Connection, gateway_schema: str, release_id: str) -> int:
    return int(
        await connection.fetchval(
            f'SELECT count(*) FROM "{gateway_schema}".audience_release_subject WHERE release_id = $1',  # noqa: S608
            release_id,
        )
    )


# --- the run ---------------------------------------------------------------------------------------


def start_profile(running: RunningPlatform, directory: str) -> dict[str, PySpy]:
    """py-spy on the gateway's and both services' workers (the biggest process of each tree)."""
    executable = _py_spy()
    if executable is None:
        log("py-spy is not installed; no profile (pip install py-spy)")
        return {}
    Path(directory).mkdir(parents=True, exist_ok=True)
    spies = {}
    for name in ("gateway", "consent", "preferences"):
        root = running.platform.processes[name].pid
        worker = max([root, *_descendants(root)], key=lambda pid: _memory_kb(pid).get("VmRSS", 0))
        spies[name] = PySpy(executable, worker, Path(directory) / f"{name}-audience.txt")
    log(f"profiling the stream: py-spy on gateway, consent, preferences -> {directory}")
    time.sleep(1.0)  # attached before the stream starts
    return spies


def measure(running: RunningPlatform, args: argparse.Namespace) -> dict[str, Any]:
    settings = running.platform.settings
    consent, preferences = settings["consent"].database_schema, settings["preferences"].database_schema
    gateway_schema = settings["gateway"].database_schema
    assert consent
    assert preferences
    assert gateway_schema

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(PLAIN_DSN)

    loop = asyncio.new_event_loop()
    connection = loop.run_until_complete(connect())
    cpu_roots = {name: running.platform.processes[name].pid for name in ("gateway", "consent", "preferences")}
    postmaster = postmaster_pid(loop.run_until_complete(connection.fetchval("SELECT pg_backend_pid()")))
    if postmaster is not None:
        cpu_roots["postgres"] = postmaster
    profile: dict[str, Any] = {}
    try:
        log(f"seeding {args.subjects:,} shoppers with COPY")
        started = time.perf_counter()
        expected = loop.run_until_complete(seed(connection, consent, preferences, args))
        seeded = time.perf_counter() - started
        log(f"seeded in {seeded:.1f} s; {expected:,} consented")
        baselines, streams, problems = [], [], []
        for round_ in range(args.rounds):
            log(f"round {round_ + 1}: baseline COPY")
            baselines.append(loop.run_until_complete(baseline(connection, consent, preferences)))
            if baselines[-1]["rows"] != expected:
                problems.append(f"the baseline COPY gave {baselines[-1]['rows']} rows, expected {expected}")
            log(f"round {round_ + 1}: gateway stream")
            spies = start_profile(running, args.profile) if args.profile and round_ == args.rounds - 1 else {}
            try:
                stream = stream_audience(running, expected, cpu_roots)
            finally:
                for spy in spies.values():
                    spy.stop()
            profile = {name: summarize_profile(spy.output) for name, spy in spies.items()} or profile
            streams.append(stream)
            if stream["problem"]:
                problems.append(stream["problem"])
            elif (
                count := loop.run_until_complete(audited(connection, gateway_schema, stream["release_id"]))
            ) != expected:
                problems.append(f"{count} audit rows for {expected} subjects listed")
            log(f"round {round_ + 1}: {stream['profiles_per_second']:,.0f} profiles/s")
        baselines.append(loop.run_until_complete(baseline(connection, consent, preferences)))
        hwm = gateway_worker_hwm_kb(running.platform.processes["gateway"].pid)
    finally:
        loop.run_until_complete(connection.close())
        loop.close()
    return {
        "seed_seconds": round(seeded, 1),
        "audience": expected,
        "baselines": baselines,
        "streams": streams,
        "peak_rss_mb": round(hwm / 1024, 1),
        "problems": problems,
        "profile": profile,
    }


def build_report(
    measured: dict[str, Any], args: argparse.Namespace, machine: dict[str, Any], command: str
) -> dict[str, Any]:
    gateway_rate = sum(s["profiles_per_second"] for s in measured["streams"]) / len(measured["streams"])
    baseline_rate = sum(b["rows_per_second"] for b in measured["baselines"]) / len(measured["baselines"])
    peak = measured["peak_rss_mb"]
    return {
        "command": command,
        "machine": machine,
        "settings": {"subjects": args.subjects, "consented": args.consented, "rounds": args.rounds},
        **measured,
        "profiles_per_second": round(gateway_rate, 1),
        "baseline_rows_per_second": round(baseline_rate, 1),
        "ratio": round(gateway_rate / baseline_rate, 3) if baseline_rate else None,
        "rss_flat": all(s["rss_flat"] for s in measured["streams"]),
        "targets": [
            {
                "metric": "profiles/s",
                "value": gateway_rate,
                "target": f">= {TARGETS['profiles_per_second']:,.0f}",
                "verdict": "PASS" if gateway_rate >= TARGETS["profiles_per_second"] else "MISS",
            },
            {
                "metric": "gateway peak RSS MB",
                "value": peak,
                "target": f"<= {TARGETS['peak_rss_mb']:.0f}",
                "verdict": "PASS" if peak <= TARGETS["peak_rss_mb"] else "MISS",
            },
        ],
    }


def print_report(report: dict[str, Any]) -> None:
    print_machine(report, "bench.audience — the whole audience through the gateway vs COPY TO STDOUT")
    print(
        f"seeded  : {report['settings']['subjects']:,} shoppers in {report['seed_seconds']} s; "
        f"audience {report['audience']:,}"
    )
    for number, stream in enumerate(report["streams"], 1):
        print(
            f"gateway : round {number}: {stream['subjects']:,} profiles in {stream['seconds']:.2f} s = "
            f"{stream['profiles_per_second']:,.0f}/s, first byte {stream['first_byte_seconds']:.2f} s, "
            f"{stream['bytes'] / 1e6:,.1f} MB; RSS peak {stream['rss_mb_first_half_peak']} MB (first half) / "
            f"{stream['rss_mb_second_half_peak']} MB (second half): {'flat' if stream['rss_flat'] else 'GROWING'}"
        )
        cpu = ", ".join(f"{name} {us:.1f}" for name, us in stream["cpu_us_per_profile"].items())
        print(f"          CPU us per profile: {cpu}")
    rates = " ".join(f"{b['rows_per_second']:,.0f}" for b in report["baselines"])
    print(f"baseline: COPY (SELECT ...) TO STDOUT rows/s per run: {rates}")
    print(
        f"result  : {report['profiles_per_second']:,.0f} profiles/s = {report['ratio']:.2f}x the COPY baseline "
        f"({report['baseline_rows_per_second']:,.0f} rows/s); "
        f"gateway worker peak RSS (VmHWM) {report['peak_rss_mb']} MB"
    )
    print("targets")
    for verdict in report["targets"]:
        print(
            f"  {verdict['verdict']:<5}{verdict['metric']:<22}{verdict['value']:>12,.1f}  (target {verdict['target']})"
        )
    for name, summary in report["profile"].items():
        print(f"py-spy {name} ({summary.get('samples', 0)} samples), inclusive % by function:")
        for function, share in list(summary.get("inclusive_by_function_pct", {}).items())[:18]:
            print(f"  {share:5.1f}  {function}")
    print()
    if report["problems"]:
        print(f"ERRORS: {report['problems']}")
    else:
        print("errors: none (every stream complete, counted and audited)")


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every stream was complete and audited (targets met or not), 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not postgres_available():
        log("PostgreSQL does not answer on 127.0.0.1:5432")
        return 1
    machine = machine_info(("granian", "litestar", "asyncpg", "msgspec", "httpx"))
    try:
        with tempfile.TemporaryDirectory(prefix="tillit-bench-audience-") as tmp, ExitStack() as stack:
            log("starting the platform (postgres, granian)")
            running = stack.enter_context(
                running_platform("postgres", Path(tmp) / "platform", {"TILLIT_SERVER": "granian", **SHIPPED_POLLING})
            )
            running.add_channel("email", ["audiences:read"])
            measured = measure(running, args)
            log("stopping")
    except (PlatformError, OSError, asyncpg.PostgresError, httpx.HTTPError, RuntimeError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    report = build_report(measured, args, machine, command_line("bench.audience", argv))
    return emit_report(report, args.json, print_report, len(report["problems"]))


if __name__ == "__main__":
    raise SystemExit(main())
