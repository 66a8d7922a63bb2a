"""The consent service on PostgreSQL against a bare asyncpg baseline, measured side by side in one run.

Run from the repository root::

    .venv/bin/python -m bench.consent [--json] [--seconds 5] [--rounds 4] [--concurrency 32]
                                      [--verify-events 200000] [--profile DIR]

(about 2.5 minutes with the defaults).

The whole platform is started as real processes on PostgreSQL (granian, one worker per process) and the
consent service is called directly with a gateway service token. Next to it, in its own process and
served the same way, runs ``bench._raw_insert_app``: a bare Litestar app doing one asyncpg statement per
request on tables shaped like the consent service's. Three scenarios, each with its baseline:

``write``
    ``POST /v1/subjects/{id}/events`` over ``--subjects`` random subjects, give and withdraw mixed: lock
    the subject's chain head, hash and insert the event, move the head, upsert the derived state, all in
    one transaction. Baseline: one auto-committed ``INSERT`` of a row with the same columns, sizes and
    indexes as a ``consent_event`` row. Every answer must be a 201 naming the subject and the new state.
``read``
    ``GET /v1/subjects/{id}/consents`` of the subjects the write scenario left with a state. Baseline: one
    ``SELECT`` by primary key of a ``consent_state``-shaped table holding the same rows. Every answer
    must be a 200 with exactly the states in the database.
``verify``
    ``GET /v1/ledger/verify`` over a ledger of ``--verify-events`` events seeded straight into the consent
    schema with ``COPY`` (valid chains computed here with the service's own hash functions). Baseline:
    this process reading the same chain heads and streaming the same columns of every event in the
    same order through an asyncpg cursor, i.e. what verification costs beyond reading the data. Every
    answer must say ``ok`` with the seeded number of chains and events.

Target and baseline alternate in rounds (target first, then baseline first, and so on) after a warm-up,
so a noisy neighbour hits both alike. Ratios are target / baseline of the same run. Targets are printed
as PASS or MISS; a miss does not fail the run, a wrong or failed answer does (exit status 1).

After the write scenario the ledger is verified once more (untimed for the ratios): it must hold the
seeded events plus every accepted write, each chained correctly. ``--profile DIR`` then records the
consent service's worker with py-spy under write load, read load and one verify (not measured for the
ratios) and summarizes where its CPU time goes.

PostgreSQL CPU time is read from ``/proc`` for the whole server (every backend), so it includes other
users of that server during the run. The load generator runs in this process and shares the cores; it
uses :func:`bench._load.fast_load_client`, because httpx would cap it below what the baselines serve.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final

import asyncpg
import httpx
import msgspec

from bench._baseline import serve_baseline
from bench._http1 import HTTP1Client
from bench._load import (
    SHIPPED_POLLING,
    Check,
    LoadResult,
    Target,
    fast_load_client,
    machine_info,
    merge,
    process_tree_cpu_seconds,
    run,
    run_load,
)
from bench._raw_insert_app import EVENT_COLUMNS, EVENT_TABLE, POOL_MAX, STATE_COLUMNS, STATE_TABLE, schema_ddl
from bench._report import (
    command_line,
    emit_report,
    fmt,
    print_errors,
    print_load_table,
    print_machine,
    print_ratios,
    print_targets,
)
from services.consent.chain import GENESIS_HASH, canonical_json, event_hash, personal_digest
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError
from tillit.testing import POSTGRES_URL

__all__ = ["SCENARIOS", "TARGETS", "main"]

SCENARIOS: Final = ("write", "read", "verify")
SIDES: Final = {"write": ("consent", "raw_insert"), "read": ("consent", "raw_select"), "verify": ("verify", "select")}
"""Per scenario: the measured side, then its baseline."""
TARGETS: Final = {
    "write": {"throughput_ratio": 0.50, "p99_ms": 50.0},
    "read": {"throughput_rps": 4_000.0, "p99_ms": 20.0},
    "verify": {"events_per_second": 200_000.0},
}
PURPOSE: Final = "marketing.communications.email"
LEDGER_PURPOSES: Final = (PURPOSE, "marketing.communications.sms", "marketing.advertising.third_party.targeted")
STATUS_OF: Final = {"give": "given", "withdraw": "withdrawn", "refuse": "refused"}
EVIDENCE: Final = {
    "ip": "203.0.113.7",
    "user_agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "page": "https://shop.example.com/checkout/newsletter",
}
SEED_BATCH_EVENTS: Final = 20_000
"""Events generated and copied per batch: keeps the seeding's memory small whatever ``--verify-events``."""
STREAM_BATCH: Final = 5_000
"""Rows per fetch of the baseline cursor: the batch ``ConsentRepository.stream_ledger`` reads with."""
CLIENT_BOUND_SHARE: Final = 0.75
ERROR_EXAMPLES: Final = 5
PLAIN_DSN: Final = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` output on stdout stays machine-readable."""
    print(message, file=sys.stderr, flush=True)


# --- answers ---------------------------------------------------------------------------------------


class _Event(msgspec.Struct):
    id: str
    subject_id: str
    purpose: str
    action: str
    seq: int
    hash: str


class _State(msgspec.Struct):
    purpose: str
    status: str
    active: bool


class _Recorded(msgspec.Struct):
    event: _Event
    state: _State


class _Inserted(msgspec.Struct):
    id: str
    subject_id: str
    action: str


class _Row(msgspec.Struct):
    purpose: str
    status: str
    event_id: str


class _Consents(msgspec.Struct):
    subject_id: str
    consents: list[_Row]


class _LedgerReport(msgspec.Struct):
    ok: bool
    chains: int
    events: int
    first_break: dict[str, Any] | None = None


def _status_problem(response: httpx.Response, expected: int) -> str | None:
    if response.status_code != expected:
        return f"status {response.status_code}: {response.text[:300]}"
    return None


def consent_write_check(subject_id: str, action: str) -> Check:
    """A 201 whose event and state are the subject's, for the purpose and with the status just recorded."""
    status = STATUS_OF[action]

    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 201)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Recorded)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        event, state = body.event, body.state
        if (event.subject_id, event.purpose, event.action) != (subject_id, PURPOSE, status):
            return f"event {event.subject_id}/{event.purpose}/{event.action}, expected {subject_id}/{PURPOSE}/{status}"
        if (state.purpose, state.status, state.active) != (PURPOSE, status, status == "given"):
            return f"state {state.purpose}/{state.status}/active={state.active} after {action}"
        if len(event.hash) != 64 or event.seq < 1:
            return f"event without a chain position: seq {event.seq}, hash {event.hash!r}"
        return None

    return check


def raw_write_check(subject_id: str, action: str) -> Check:
    status = STATUS_OF[action]

    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 201)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Inserted)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        if (body.subject_id, body.action) != (subject_id, status) or len(body.id) != 36:
            return f"inserted {body.id}/{body.subject_id}/{body.action}, expected ?/{subject_id}/{status}"
        return None

    return check


def read_check(subject_id: str, expected: Sequence[tuple[str, str, str]]) -> Check:
    """A 200 listing exactly ``expected`` (purpose, status, event id) states, ordered by purpose."""
    wanted = list(expected)

    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 200)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Consents)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        got = [(row.purpose, row.status, row.event_id) for row in body.consents]
        if body.subject_id != subject_id or got != wanted:
            return f"{body.subject_id}: {got}, expected {subject_id}: {wanted}"
        return None

    return check


# --- bookkeeping -----------------------------------------------------------------------------------


@dataclass
class Problems:
    """Every failed or wrong answer of the run, by where it happened; the run fails if there is any."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, count: int, examples: Sequence[str]) -> None:
        if not count:
            return
        self.counts[where] = self.counts.get(where, 0) + count
        for example in examples:
            if len(self.examples) < 3 * ERROR_EXAMPLES:
                self.examples.append(f"{where}: {example}")
        log(f"ERROR {where}: {count} failed or wrong answers, e.g. {examples[0] if examples else '?'}")

    def add_result(self, where: str, result: LoadResult) -> None:
        self.add(where, result.errors, result.error_examples)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class Side:
    """One server under load: where it listens and which processes' CPU time to count."""

    name: str
    client: HTTP1Client
    pids: Callable[[], dict[str, int]]
    results: list[LoadResult] = field(default_factory=list)


@dataclass
class VerifyRun:
    """One timed walk over the ledger, by the service or by the bare cursor."""

    seconds: float
    events: int
    chains: int
    cpu: dict[str, float] | None


@dataclass
class Ledger:
    """What was seeded for the verify scenario, and how long it took."""

    events: int
    chains: int
    seconds: float


@dataclass
class Context:
    """Everything the scenarios share."""

    args: argparse.Namespace
    running: RunningPlatform
    consent_url: str
    consent_schema: str
    raw_url: str
    raw_schema: str
    raw_pid: int
    postmaster_pid: int | None
    problems: Problems = field(default_factory=Problems)
    subjects: list[str] = field(default_factory=list)
    accepted_writes: int = 0
    uncertain_writes: int = 0
    """Writes whose answer failed: they may or may not be in the ledger."""

    @property
    def consent_pid(self) -> int:
        return self.running.platform.processes["consent"].pid

    def pids(self, app_pid: int) -> Callable[[], dict[str, int]]:
        def named() -> dict[str, int]:
            pids = {"app": app_pid}
            if self.postmaster_pid is not None:
                pids["postgres"] = self.postmaster_pid
            return pids

        return named


# --- seeding ---------------------------------------------------------------------------------------


def _chain_lengths(events: int, chain_length: int) -> list[int]:
    chains, rest = divmod(events, chain_length)
    lengths = [chain_length] * chains
    if rest:
        lengths.append(rest)
    return lengths


def ledger_records(
    lengths: Sequence[int], first_chain: int, rng: random.Random, start: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Events and chain heads of ``lengths`` valid chains, as rows of ``consent_event`` and ``consent_chain``.

    Hashed with the service's own :func:`event_hash` and :func:`personal_digest`, so the service must
    find every chain intact. The evidence is stored as the service stores it (:func:`canonical_json`
    text, which is what asyncpg's ``json`` codec takes).
    """
    events: list[tuple[Any, ...]] = []
    heads: list[tuple[Any, ...]] = []
    evidence_json = canonical_json(EVIDENCE).decode()
    for offset, length in enumerate(lengths):
        number = first_chain + offset
        chain_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        subject_id = f"ledger-{number:07d}"
        prev = GENESIS_HASH
        moment = start + timedelta(seconds=number, microseconds=rng.randrange(1_000_000))
        for seq in range(1, length + 1):
            event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            purpose = LEDGER_PURPOSES[(number + seq) % len(LEDGER_PURPOSES)]
            action = "given" if seq % 3 else "withdrawn"
            notice_version = None if seq % 2 else 1 + seq % 4
            moment += timedelta(minutes=seq, microseconds=rng.randrange(1_000_000))
            salt = f"{rng.getrandbits(128):032x}"
            personal = personal_digest(salt, subject_id, EVIDENCE)
            digest = event_hash(
                chain_id=chain_id,
                seq=seq,
                prev_hash=prev,
                event_id=event_id,
                purpose=purpose,
                action=action,
                notice_version=notice_version,
                source="import",
                collected_at=moment,
                recorded_at=moment,
                personal=personal,
            )
            events.append(
                (
                    event_id,
                    chain_id,
                    seq,
                    subject_id,
                    purpose,
                    action,
                    notice_version,
                    "import",
                    moment,
                    moment,
                    evidence_json,
                    salt,
                    personal,
                    prev,
                    digest,
                )
            )
            prev = digest
        heads.append((chain_id, subject_id, length, prev, moment))
    return events, heads


async def seed_ledger(connection: asyncpg.Connection, context: Context) -> Ledger:
    """``--verify-events`` events in ``--verify-chain-length`` chains, copied into the consent schema.

    The same event rows go into the baseline's ``raw_event`` table as well, so that the write
    baseline inserts into a table as large as the consent service's.
    """
    args = context.args
    started = time.perf_counter()
    lengths = _chain_lengths(args.verify_events, args.verify_chain_length)
    rng = random.Random(20_261_124)  # the same ledger every run
    start = datetime.now(UTC) - timedelta(days=400)
    per_batch = max(1, SEED_BATCH_EVENTS // args.verify_chain_length)
    async with connection.transaction():
        for first in range(0, len(lengths), per_batch):
            events, heads = ledger_records(lengths[first : first + per_batch], first, rng, start)
            await connection.copy_records_to_table(
                "consent_event", records=events, columns=EVENT_COLUMNS, schema_name=context.consent_schema
            )
            await connection.copy_records_to_table(
                EVENT_TABLE, records=events, columns=EVENT_COLUMNS, schema_name=context.raw_schema
            )
            await connection.copy_records_to_table(
                "consent_chain",
                records=heads,
                columns=("chain_id", "subject_id", "length", "head_hash", "updated_at"),
                schema_name=context.consent_schema,
            )
    # Hint bits, visibility map and statistics settled now, not during the first timed walk.
    for table in ("consent_event", "consent_chain"):
        await connection.execute(f'VACUUM ANALYZE "{context.consent_schema}".{table}')
    await connection.execute(f'VACUUM ANALYZE "{context.raw_schema}".{EVENT_TABLE}')
    return Ledger(events=sum(lengths), chains=len(lengths), seconds=time.perf_counter() - started)


# --- the verify scenario ---------------------------------------------------------------------------


async def service_verify(
    client: httpx.AsyncClient, context: Context, expected: Ledger | None, *, lenient_by: int = 0
) -> tuple[VerifyRun, str | None]:
    """One ``GET /v1/ledger/verify``, timed from request to full answer; the problem if it is wrong.

    ``expected`` None accepts any count; ``lenient_by`` accepts that many events more than expected
    (writes whose answer was lost may or may not have been committed).
    """
    pids = context.pids(context.consent_pid)()
    before = process_tree_cpu_seconds(pids)
    started = time.perf_counter()
    response = await client.get(
        f"{context.consent_url}/v1/ledger/verify", headers=context.running.service_headers("consent")
    )
    seconds = time.perf_counter() - started
    after = process_tree_cpu_seconds(pids)
    cpu = None if before is None or after is None else {name: after[name] - before[name] for name in after}
    problem = _status_problem(response, 200)
    if problem:
        return VerifyRun(seconds, 0, 0, cpu), problem
    try:
        report = msgspec.json.decode(response.content, type=_LedgerReport)
    except msgspec.DecodeError as exc:
        return VerifyRun(seconds, 0, 0, cpu), f"unexpected body ({exc}): {response.text[:300]}"
    run_ = VerifyRun(seconds, report.events, report.chains, cpu)
    if not report.ok:
        return run_, f"the ledger does not verify: {report.first_break}"
    if expected is not None and not (
        expected.events <= report.events <= expected.events + lenient_by
        and expected.chains <= report.chains <= expected.chains + lenient_by
    ):
        return run_, (
            f"verified {report.chains} chains / {report.events} events, expected {expected.chains} / "
            f"{expected.events}" + (f" (+ up to {lenient_by})" if lenient_by else "")
        )
    return run_, None


async def cursor_walk(
    connection: asyncpg.Connection, context: Context, expected: Ledger
) -> tuple[VerifyRun, str | None]:
    """The baseline: the verifier's two queries, every row fetched and dropped (asyncpg, this process)."""
    columns = ", ".join(EVENT_COLUMNS)
    schema = context.consent_schema
    pids = {"bench": os.getpid()}
    if context.postmaster_pid is not None:
        pids["postgres"] = context.postmaster_pid
    before = process_tree_cpu_seconds(pids)
    started = time.perf_counter()
    async with connection.transaction(readonly=True):
        heads = await connection.fetch(f'SELECT chain_id, subject_id, length, head_hash FROM "{schema}".consent_chain')  # noqa: S608 - our own schema
        events = 0
        query = f'SELECT {columns} FROM "{schema}".consent_event ORDER BY chain_id, seq'  # noqa: S608 - constants
        async for _row in connection.cursor(query, prefetch=STREAM_BATCH):
            events += 1
    seconds = time.perf_counter() - started
    after = process_tree_cpu_seconds(pids)
    cpu = None if before is None or after is None else {name: after[name] - before[name] for name in after}
    walk = VerifyRun(seconds, events, len(heads), cpu)
    if (events, len(heads)) != (expected.events, expected.chains):
        return walk, f"read {len(heads)} chains / {events} events, expected {expected.chains} / {expected.events}"
    return walk, None


async def measure_verify(
    connection: asyncpg.Connection, client: httpx.AsyncClient, context: Context, ledger: Ledger
) -> dict[str, list[VerifyRun]]:
    args = context.args
    runs: dict[str, list[VerifyRun]] = {"verify": [], "select": []}

    async def one(side: str, label: str) -> VerifyRun:
        if side == "verify":
            walk, problem = await service_verify(client, context, ledger)
        else:
            walk, problem = await cursor_walk(connection, context, ledger)
        context.problems.add(f"verify {label} ({side})", 1 if problem else 0, [problem] if problem else [])
        log(f"{label:<14} verify   {side:<11} {walk.seconds:7.2f} s  {walk.events / walk.seconds:9.0f} events/s")
        return walk

    for side in ("verify", "select"):
        await one(side, "warm-up")
    for number in range(args.verify_rounds):
        order = ("verify", "select") if number % 2 == 0 else ("select", "verify")
        for side in order:
            runs[side].append(await one(side, f"round {number + 1}/{args.verify_rounds}"))
    return runs


# --- the load scenarios ----------------------------------------------------------------------------


def write_targets(context: Context, headers: Mapping[str, str]) -> dict[str, list[Target]]:
    """The same sequence of (subject, action) for both sides, spread at random over the subjects."""
    rng = random.Random(7)
    consent: list[Target] = []
    raw: list[Target] = []
    for _ in range(4 * len(context.subjects)):
        subject_id = rng.choice(context.subjects)
        action = rng.choice(("give", "withdraw"))
        body = msgspec.json.encode({"purpose": PURPOSE, "action": action, "source": "import", "evidence": EVIDENCE})
        consent.append(
            Target(
                f"{context.consent_url}/v1/subjects/{subject_id}/events",
                consent_write_check(subject_id, action),
                headers,
                method="POST",
                body=body,
            )
        )
        raw.append(
            Target(
                f"{context.raw_url}/raw/subjects/{subject_id}/events",
                raw_write_check(subject_id, action),
                headers,
                method="POST",
                body=body,
            )
        )
    return {"consent": consent, "raw_insert": raw}


async def read_targets(
    connection: asyncpg.Connection, context: Context, headers: Mapping[str, str]
) -> dict[str, list[Target]]:
    """Every subject with a state, expecting exactly its rows; the baseline's table gets the same rows."""
    rows = await connection.fetch(
        f'SELECT {", ".join(STATE_COLUMNS)} FROM "{context.consent_schema}".consent_state '  # noqa: S608 - constants
        "ORDER BY subject_id, purpose"
    )
    if not rows:
        raise RuntimeError("the write scenario left no consent state to read")
    await connection.copy_records_to_table(
        STATE_TABLE, records=[tuple(row) for row in rows], columns=STATE_COLUMNS, schema_name=context.raw_schema
    )
    await connection.execute(f'VACUUM ANALYZE "{context.raw_schema}".{STATE_TABLE}')
    states: dict[str, list[tuple[str, str, str]]] = {}
    for row in rows:
        states.setdefault(row["subject_id"], []).append((row["purpose"], row["status"], row["event_id"]))
    subjects = list(states)
    random.Random(11).shuffle(subjects)
    return {
        "consent": [
            Target(
                f"{context.consent_url}/v1/subjects/{subject}/consents", read_check(subject, states[subject]), headers
            )
            for subject in subjects
        ],
        "raw_select": [
            Target(f"{context.raw_url}/raw/subjects/{subject}/consents", read_check(subject, states[subject]), headers)
            for subject in subjects
        ],
    }


async def measure_load(
    scenario: str, sides: Sequence[Side], targets: Mapping[str, Sequence[Target]], context: Context
) -> None:
    """Warm each side up, then the rounds, alternating which side goes first.

    ``run_load`` cycles through its targets from the first one on every call; each call here starts
    where the side's previous one stopped instead, so that every round reaches new subjects rather
    than repeating the first few hundred.
    """
    args = context.args
    offsets = dict.fromkeys(targets, 0)

    async def load(side: Side, seconds: float, pids: Callable[[], dict[str, int]] | None) -> LoadResult:
        listed = targets[side.name]
        start = offsets[side.name]
        result = await run_load(
            side.client,
            [*listed[start:], *listed[:start]],
            concurrency=args.concurrency,
            seconds=seconds,
            server_pids=pids,
        )
        offsets[side.name] = (start + result.requests) % len(listed)
        if scenario == "write":
            _count_writes(context, side.name, result)
        return result

    for side in sides:
        log(f"warm-up        {scenario:<8} {side.name:<11} {args.warmup:g}s")
        warm = await load(side, args.warmup, None)
        context.problems.add_result(f"{scenario} warm-up ({side.name})", warm)
    for number in range(args.rounds):
        order = sides if number % 2 == 0 else list(reversed(sides))
        for side in order:
            result = await load(side, args.seconds, side.pids)
            context.problems.add_result(f"{scenario} round {number + 1} ({side.name})", result)
            side.results.append(result)
            log(
                f"round {number + 1}/{args.rounds}      {scenario:<8} {side.name:<11} {result.throughput:8.0f} req/s"
                f"  p50 {result.latency_ms(0.50):6.1f} ms  p99 {result.latency_ms(0.99):6.1f} ms"
            )


def _count_writes(context: Context, side: str, result: LoadResult) -> None:
    if side == "consent":
        context.accepted_writes += result.requests - result.errors
        context.uncertain_writes += result.errors


# --- processes -------------------------------------------------------------------------------------


def postmaster_pid(backend_pid: int) -> int | None:
    """The PostgreSQL server process (parent of a backend), when it runs on this machine."""
    try:
        stat = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _descendants(root: int) -> dict[int, int]:
    """Descendant pids of ``root`` with their CPU ticks so far."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = ticks[pid]
                frontier.append(pid)
    return found


def raw_app(dsn: str, schema: str, log_path: Path) -> AbstractContextManager[tuple[str, int]]:
    """``bench._raw_insert_app`` in its own process, served like a tillit component; (url, pid)."""
    return serve_baseline("bench._raw_insert_app", {"BENCH_RAW_DSN": dsn, "BENCH_RAW_SCHEMA": schema}, log_path)


# --- profiling -------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` of one process until stopped; collapsed stacks with full file names.

    ``--gil`` samples only the thread holding the GIL: py-spy's idle detection does not work in every
    container, and without it threads parked on a condition or the loop waiting in epoll would be
    counted as busy. The samples are then Python CPU time (C code that releases the GIL is missed).
    """

    def __init__(self, executable: str, pid: int, output: Path) -> None:
        self.output = output
        self._log: IO[bytes] = output.with_suffix(".log").open("wb")
        command = [executable, "record", "--pid", str(pid), "--gil", "--format", "raw", "--full-filenames"]
        self._process = subprocess.Popen(
            [*command, "--rate", "200", "--output", str(output)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


_PLUMBING: Final = ("granian", "stdlib:multiprocessing", "<frozen runpy>", "tillit/__main__.py", "tillit/cli.py")
"""Frames every sample of a granian worker runs under; left out of the inclusive table."""


def _package(path: str) -> str:
    """Where a frame's code lives: a site-package, a file of this repository, or the standard library."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    root = f"{REPO_ROOT}/"
    if path.startswith(root):
        return path[len(root) :]
    marker = "/lib/python3."
    if marker in path:
        inside = path.split(marker, 1)[1].split("/", 1)[-1]
        return "stdlib:" + inside.split("/", 1)[0].removesuffix(".py")
    return path


def summarize_profile(path: Path, top: int = 30) -> dict[str, Any]:
    """Self time by package, inclusive time by package and by function, in percent of the samples."""
    total = 0
    self_package: Counter[str] = Counter()
    inclusive_package: Counter[str] = Counter()
    inclusive_function: Counter[str] = Counter()
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            name, _, location = frame.partition(" (")
            frames.append((name, _package(location.rsplit(":", 1)[0])))
        self_package[frames[-1][1]] += count
        for package in {package for _, package in frames}:
            inclusive_package[package] += count
        for function in {f"{name} ({package})" for name, package in frames if package not in _PLUMBING}:
            inclusive_function[function] += count

    def share(counter: Counter[str]) -> dict[str, float]:
        return {key: round(100.0 * value / total, 1) for key, value in counter.most_common(top)} if total else {}

    return {
        "samples": total,
        "self_by_package_pct": share(self_package),
        "inclusive_by_package_pct": share(inclusive_package),
        "inclusive_by_function_pct": share(inclusive_function),
    }


def worker_to_profile(server_pid: int) -> tuple[str, int] | None:
    """(py-spy executable, the busiest worker under ``server_pid``), or None (logged) without py-spy."""
    executable = _py_spy()
    if executable is None:
        log("py-spy is not installed; no profile (pip install py-spy)")
        return None
    workers = _descendants(server_pid) or {server_pid: 0}
    return executable, max(workers, key=lambda pid: workers[pid])


async def profile_consent(
    context: Context, targets: Mapping[str, Sequence[Target]], client: HTTP1Client, verify_client: httpx.AsyncClient
) -> dict[str, Any]:
    """py-spy on the consent worker under write load, read load and one verify (not used for ratios)."""
    spied = worker_to_profile(context.consent_pid)
    if spied is None:
        return {}
    executable, worker = spied
    directory = Path(context.args.profile)
    summaries: dict[str, Any] = {"worker_pid": worker, "directory": str(directory)}
    # Writes last: they change the states the read targets expect.
    for scenario in ("read", "verify", "write"):
        output = directory / f"consent-{scenario}.txt"
        log(f"profiling      {scenario:<8} consent     py-spy -> {output}")
        spy = PySpy(executable, worker, output)
        await asyncio.sleep(1.0)  # attached before the load starts
        try:
            if scenario == "verify":
                walk, problem = await service_verify(verify_client, context, None)
                context.problems.add("profile verify", 1 if problem else 0, [problem] if problem else [])
                summaries["verify_seconds"] = round(walk.seconds, 3)
            else:
                result = await run_load(
                    client,
                    targets[scenario],
                    concurrency=context.args.concurrency,
                    seconds=context.args.profile_seconds,
                )
                context.problems.add_result(f"profile {scenario}", result)
                if scenario == "write":
                    _count_writes(context, "consent", result)
        finally:
            spy.stop()
        summaries[scenario] = summarize_profile(output)
    return summaries


# --- the run ---------------------------------------------------------------------------------------


async def measure(context: Context) -> dict[str, Any]:
    args = context.args
    measured: dict[str, Any] = {}
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        async with AsyncExitStack() as stack:
            verify_client = await stack.enter_async_context(httpx.AsyncClient(timeout=600.0))
            clients = {
                name: await stack.enter_async_context(fast_load_client(args.concurrency))
                for name in ("consent", "raw_insert", "raw_select")
            }
            log(f"seeding a ledger of {args.verify_events} events ({args.verify_chain_length} per chain) with COPY")
            ledger = await seed_ledger(connection, context)
            measured["ledger"] = ledger
            log(f"seeded {ledger.events} events in {ledger.chains} chains in {ledger.seconds:.1f} s")

            measured["verify"] = await measure_verify(connection, verify_client, context, ledger)

            headers = {**context.running.service_headers("consent"), "content-type": "application/json"}
            writes = write_targets(context, headers)
            write_sides = [
                Side("consent", clients["consent"], context.pids(context.consent_pid)),
                Side("raw_insert", clients["raw_insert"], context.pids(context.raw_pid)),
            ]
            await measure_load("write", write_sides, writes, context)
            measured["write"] = {side.name: side.results for side in write_sides}

            log("verifying the ledger after the writes")
            grown = Ledger(events=ledger.events + context.accepted_writes, chains=ledger.chains, seconds=0.0)
            after_writes, problem = await service_verify(verify_client, context, None)
            if problem is None and not (grown.events <= after_writes.events <= grown.events + context.uncertain_writes):
                problem = f"verified {after_writes.events} events after the writes, expected {grown.events}" + (
                    f" (+ up to {context.uncertain_writes})" if context.uncertain_writes else ""
                )
            most_chains = ledger.chains + len(context.subjects)
            if problem is None and not ledger.chains < after_writes.chains <= most_chains:
                problem = (
                    f"verified {after_writes.chains} chains, expected {ledger.chains} + at most {len(context.subjects)}"
                )
            context.problems.add("ledger after the writes", 1 if problem else 0, [problem] if problem else [])
            measured["after_writes"] = (after_writes, grown)
            log(
                f"after writes   verify   {after_writes.events} events in {after_writes.seconds:.2f} s"
                f" ({'ok' if problem is None else 'WRONG'})"
            )

            headers = {**context.running.service_headers("consent"), "content-type": "application/json"}
            reads = await read_targets(connection, context, headers)
            read_sides = [
                Side("consent", clients["consent"], context.pids(context.consent_pid)),
                Side("raw_select", clients["raw_select"], context.pids(context.raw_pid)),
            ]
            await measure_load("read", read_sides, reads, context)
            measured["read"] = {side.name: side.results for side in read_sides}
            measured["read_subjects"] = len(reads["consent"])

            if args.profile:
                headers = {**context.running.service_headers("consent"), "content-type": "application/json"}
                targets = {"write": write_targets(context, headers)["consent"], "read": reads["consent"]}
                measured["profile"] = await profile_consent(context, targets, clients["consent"], verify_client)
    finally:
        await connection.close()
    return measured


# --- the report ------------------------------------------------------------------------------------


def _ratio(candidate: float | None, baseline: float | None) -> float | None:
    if candidate is None or baseline is None or not baseline:
        return None
    return round(candidate / baseline, 3)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def summarize_load(rounds: Sequence[LoadResult]) -> dict[str, Any]:
    result = merge(rounds)
    by_process = result.server_cpu_per_request_ms_by_process() or {}
    cores = result.server_cpu_share
    app_cores = None if result.server_cpu is None or not result.elapsed else result.server_cpu["app"] / result.elapsed
    return {
        "requests": result.requests,
        "errors": result.errors,
        "seconds": round(result.elapsed, 3),
        "throughput_rps": round(result.throughput, 1),
        "round_throughputs_rps": [round(one.throughput, 1) for one in rounds],
        "p50_ms": round(result.latency_ms(0.50), 3),
        "p99_ms": round(result.latency_ms(0.99), 3),
        "max_ms": round(result.latency_ms(1.0), 3),
        "cpu_ms_per_request": {name: round(ms, 3) for name, ms in by_process.items()},
        "app_cores": _round(app_cores),
        "app_and_postgres_cores": _round(cores),
        "client_cpu_share": round(result.client_cpu_share, 3),
        "client_bound": result.client_cpu_share >= CLIENT_BOUND_SHARE
        and (app_cores is None or app_cores < result.client_cpu_share),
    }


def summarize_verify(runs: Sequence[VerifyRun]) -> dict[str, Any]:
    seconds = sum(run_.seconds for run_ in runs)
    events = sum(run_.events for run_ in runs)
    cpu: dict[str, float] = {}
    for run_ in runs:
        for name, used in (run_.cpu or {}).items():
            cpu[name] = cpu.get(name, 0.0) + used
    return {
        "walks": len(runs),
        "events_per_walk": runs[0].events if runs else 0,
        "seconds_per_walk": round(seconds / len(runs), 3) if runs else None,
        "round_seconds": [round(run_.seconds, 3) for run_ in runs],
        "events_per_second": round(events / seconds, 1) if seconds else None,
        "cpu_us_per_event": {name: round(1e6 * used / events, 3) for name, used in cpu.items()} if events else {},
    }


def _verdict(value: float | None, target: float, at_least: bool) -> str:
    if value is None:
        return "n/a"
    return "PASS" if (value >= target if at_least else value <= target) else "MISS"


def build_report(
    measured: Mapping[str, Any], context: Context, machine: dict[str, Any], command: str
) -> dict[str, Any]:
    args = context.args
    results: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for scenario in ("write", "read"):
        target_name, baseline_name = SIDES[scenario]
        by_side = measured.get(scenario)
        if not by_side:
            continue
        target_rounds, baseline_rounds = by_side[target_name], by_side[baseline_name]
        results[scenario] = {target_name: summarize_load(target_rounds), baseline_name: summarize_load(baseline_rounds)}
        mine, theirs = merge(target_rounds), merge(baseline_rounds)
        ratios[scenario] = {
            "throughput": _ratio(mine.throughput, theirs.throughput),
            "p50": _ratio(mine.latency_ms(0.50), theirs.latency_ms(0.50)),
            "p99": _ratio(mine.latency_ms(0.99), theirs.latency_ms(0.99)),
            "app_cpu_per_request": _ratio(
                results[scenario][target_name]["cpu_ms_per_request"].get("app"),
                results[scenario][baseline_name]["cpu_ms_per_request"].get("app"),
            ),
            "round_throughputs": [
                _ratio(one.throughput, other.throughput)
                for one, other in zip(target_rounds, baseline_rounds, strict=True)
            ],
        }
    if measured.get("verify"):
        runs = measured["verify"]
        results["verify"] = {"verify": summarize_verify(runs["verify"]), "select": summarize_verify(runs["select"])}
        mine, theirs = results["verify"]["verify"], results["verify"]["select"]
        ratios["verify"] = {
            "throughput": _ratio(mine["events_per_second"], theirs["events_per_second"]),
            "round_throughputs": [
                _ratio(one.events / one.seconds, other.events / other.seconds)
                for one, other in zip(runs["verify"], runs["select"], strict=True)
            ],
        }
    verdicts = []

    def judge(scenario: str, metric: str, value: float | None, target: float, at_least: bool) -> None:
        verdict: dict[str, Any] = {
            "scenario": scenario,
            "metric": metric,
            "target": f"{'>=' if at_least else '<='} {target:g}",
            "value": value,
            "verdict": _verdict(value, target, at_least),
        }
        if metric == "p99 ms":
            # Little's law in a closed loop: mean latency = clients / throughput, and p99 >= mean.
            verdict["needs_rps_above"] = round(args.concurrency / (target / 1000.0))
        verdicts.append(verdict)

    if "write" in results:
        judge(
            "write",
            "throughput / raw insert",
            ratios["write"]["throughput"],
            TARGETS["write"]["throughput_ratio"],
            True,
        )
        judge("write", "p99 ms", results["write"]["consent"]["p99_ms"], TARGETS["write"]["p99_ms"], False)
    if "read" in results:
        judge("read", "req/s", results["read"]["consent"]["throughput_rps"], TARGETS["read"]["throughput_rps"], True)
        judge("read", "p99 ms", results["read"]["consent"]["p99_ms"], TARGETS["read"]["p99_ms"], False)
    if "verify" in results:
        judge(
            "verify",
            "events/s",
            results["verify"]["verify"]["events_per_second"],
            TARGETS["verify"]["events_per_second"],
            True,
        )
    report: dict[str, Any] = {
        "benchmark": "consent",
        "command": command,
        "machine": machine,
        "settings": {
            "backend": "postgres",
            "server": "granian, 1 worker per process (consent service and raw app alike)",
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "subjects": args.subjects,
            "verify_events": args.verify_events,
            "verify_chain_length": args.verify_chain_length,
            "verify_rounds": args.verify_rounds,
            "raw_pool_max": POOL_MAX,
            "client": "bench._http1 (asyncio + httptools), HTTP/1.1 keep-alive, same process as the benchmark",
        },
        "results": results,
        "ratios": ratios,
        "targets": verdicts,
        "errors": {
            "total": context.problems.total,
            "by_phase": context.problems.counts,
            "examples": context.problems.examples,
        },
    }
    if "ledger" in measured:
        ledger: Ledger = measured["ledger"]
        report["seed"] = {
            "events": ledger.events,
            "chains": ledger.chains,
            "seconds": round(ledger.seconds, 2),
            "events_per_second": round(ledger.events / ledger.seconds) if ledger.seconds else None,
        }
    if "after_writes" in measured:
        walk, grown = measured["after_writes"]
        report["ledger_after_writes"] = {
            "events": walk.events,
            "chains": walk.chains,
            "expected_events": grown.events,
            "uncertain_writes": context.uncertain_writes,
            "seconds": round(walk.seconds, 3),
            "events_per_second": round(walk.events / walk.seconds) if walk.seconds else None,
        }
    if "read_subjects" in measured:
        report["settings"]["read_subjects"] = measured["read_subjects"]
    if measured.get("profile"):
        report["profile"] = measured["profile"]
    return report


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print_machine(report, "consent service on PostgreSQL vs a bare asyncpg baseline (same server, same run)")
    print(
        f"settings: {settings['rounds']} rounds x {settings['seconds']:g}s per side, alternating; warm-up "
        f"{settings['warmup_seconds']:g}s; concurrency {settings['concurrency']}; {settings['subjects']} subjects; "
        f"verify {settings['verify_events']} events ({settings['verify_chain_length']}/chain) x "
        f"{settings['verify_rounds']} rounds; {settings['server']}; raw pool <= {settings['raw_pool_max']}; "
        "client: bench._http1 HTTP/1.1 in this process"
    )
    if "seed" in report:
        seed = report["seed"]
        print(f"seed    : {seed['events']} events in {seed['chains']} chains, COPY in {seed['seconds']:g} s")
    print()
    print_load_table(report, ("write", "read"))
    if "verify" in report["results"]:
        print()
        header = f"{'verify':<9}{'side':<12}{'events/s':>10}{'s/walk':>8}  {'per round s':<24}{'CPU us/event':<40}"
        print(header)
        print("-" * len(header))
        for side, row in report["results"]["verify"].items():
            rounds = " ".join(f"{value:.2f}" for value in row["round_seconds"])
            cpu = "  ".join(f"{name} {value:.2f}" for name, value in row["cpu_us_per_event"].items())
            print(
                f"{'':<9}{side:<12}{fmt(row['events_per_second'], '>10.0f')}{fmt(row['seconds_per_walk'], '>8.2f')}"
                f"  {rounds:<24}{cpu}"
            )
        print("(verify = GET /v1/ledger/verify; select = the same rows through an asyncpg cursor in this process)")
    if "ledger_after_writes" in report:
        after = report["ledger_after_writes"]
        print(
            f"ledger after the writes: {after['events']} events in {after['chains']} chains verified in "
            f"{after['seconds']:.2f} s (expected {after['expected_events']} events)"
        )
    print()
    print_ratios(report, SIDES, label_width=22)
    print()
    print_targets(report, scenario_width=8)
    bound = [
        scenario
        for scenario in ("write", "read")
        if any(row["client_bound"] for row in report["results"].get(scenario, {}).values())
    ]
    if bound:
        print(
            f"note: in {', '.join(bound)} the load generator (same process) used most of a core and more than the "
            "app; the side it loads may be client-bound there, app ms/req is the steadier figure."
        )
    if report.get("profile"):
        print()
        print_profile(report["profile"])
    print_errors(report)


def print_profile(
    profile: Mapping[str, Any], component: str = "consent", scenarios: Sequence[str] = ("write", "read", "verify")
) -> None:
    print(f"py-spy profile of the {component} worker (pid {profile['worker_pid']}; stacks in {profile['directory']})")
    for scenario in scenarios:
        summary = profile.get(scenario)
        if not summary or not summary.get("samples"):
            continue
        print(f"  {scenario}: {summary['samples']} samples")
        for title, key, count in (
            ("self by package", "self_by_package_pct", 10),
            ("inclusive by package", "inclusive_by_package_pct", 12),
            ("inclusive by function", "inclusive_by_function_pct", 25),
        ):
            parts = [(name, pct) for name, pct in summary[key].items() if name not in _PLUMBING][:count]
            print(f"    {title}:")
            for name, pct in parts:
                print(f"      {pct:5.1f}%  {name}")


# --- entry point -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.consent", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measured load round (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="load rounds per side (default 4; even balances order)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per side and scenario (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--subjects", type=int, default=5_000, help="subjects the writes spread over (default 5000)")
    parser.add_argument("--verify-events", type=int, default=200_000, help="events in the verified ledger")
    parser.add_argument("--verify-chain-length", type=int, default=10, help="events per seeded chain (default 10)")
    parser.add_argument("--verify-rounds", type=int, default=3, help="timed walks per side (default 3)")
    parser.add_argument("--profile", metavar="DIR", help="afterwards, py-spy the consent worker; stacks go to DIR")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="load per profiled scenario (default 5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.profile_seconds <= 0:
        parser.error("--seconds and --profile-seconds must be > 0, --warmup >= 0")
    if min(args.rounds, args.concurrency, args.subjects, args.verify_events, args.verify_chain_length) < 1:
        parser.error("--rounds, --concurrency, --subjects, --verify-events and --verify-chain-length must be >= 1")
    if args.verify_rounds < 1:
        parser.error("--verify-rounds must be >= 1")
    return args


async def _postmaster() -> int | None:
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        return postmaster_pid(await connection.fetchval("SELECT pg_backend_pid()"))
    finally:
        await connection.close()


async def _create_raw_schema(schema: str) -> None:
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        for statement in schema_ddl(schema):
            await connection.execute(statement)
    finally:
        await connection.close()


async def _drop_schema(schema: str) -> None:
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every answer was the expected one (targets met or not), 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if not postgres_available():
        log("PostgreSQL does not answer on 127.0.0.1:5432")
        return 1
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    machine = machine_info(("granian", "litestar", "sqlalchemy", "asyncpg", "msgspec", "uvloop", "httpx"))
    measured: dict[str, Any] = {}
    context: Context | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="tillit-bench-consent-") as tmp, ExitStack() as stack:
            log("starting the platform (postgres, granian)")
            running = stack.enter_context(
                running_platform("postgres", Path(tmp) / "platform", {"TILLIT_SERVER": "granian", **SHIPPED_POLLING})
            )
            consent = running.platform.settings["consent"]
            assert consent.database_schema is not None
            raw_schema = f"{running.env['TILLIT_DATABASE_SCHEMA_PREFIX']}bench_raw"
            stack.callback(lambda: run(_drop_schema(raw_schema)))
            run(_create_raw_schema(raw_schema))
            log("starting the raw asyncpg app (granian)")
            raw_url, raw_pid = stack.enter_context(raw_app(PLAIN_DSN, raw_schema, Path(tmp) / "raw_app.log"))
            context = Context(
                args=args,
                running=running,
                consent_url=running.url("consent"),
                consent_schema=consent.database_schema,
                raw_url=raw_url,
                raw_schema=raw_schema,
                raw_pid=raw_pid,
                postmaster_pid=run(_postmaster()),
                subjects=[f"shopper-{number:05d}" for number in range(args.subjects)],
            )
            measured = run(measure(context))
            log("stopping")
    except (PlatformError, OSError, asyncpg.PostgresError, httpx.HTTPError, RuntimeError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    assert context is not None
    report = build_report(measured, context, machine, command_line("bench.consent", argv))
    return emit_report(report, args.json, print_report, context.problems.total)


if __name__ == "__main__":
    raise SystemExit(main())
