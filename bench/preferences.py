"""The preferences service on PostgreSQL against a bare asyncpg baseline, measured side by side in one run.

Run from the repository root::

    .venv/bin/python -m bench.preferences [--json] [--seconds 5] [--rounds 4] [--concurrency 32] [--profile DIR]

(about a minute with the defaults).

Set up as :mod:`bench.consent` (whose helpers it reuses): the whole platform on PostgreSQL (granian, one
worker per process), the preferences service called directly with a gateway service token, and next to
it ``bench._raw_insert_app`` served the same way. Two scenarios, each with its baseline:

``answer``
    ``POST /v1/quiz-sessions/{id}/answers`` of the ``style`` quiz: each client holds a session and answers
    its current question with a valid, random answer picked from the question the previous answer
    returned; a finished session is dropped and the next one taken. Sessions are started (``POST
    /v1/subjects/{id}/quiz-sessions``) before each round and not timed; should a round run out of them,
    a client starts one itself (counted as ``inline starts``, inside the round's time). Only answers are
    counted and timed. Every answer must be a 200 for the session, still in progress, holding the answer
    just given and moved on to another question (or to the end). Baseline: one auto-committed raw
    ``INSERT`` of a consent-event-sized row, as ``bench.consent``'s write baseline.
``profile``
    ``GET /v1/subjects/{id}/profile`` over ``--profiles`` profiles seeded through ``PATCH`` (every seed
    answer checked). Every answer must be a 200 with exactly the seeded fields and their provenance.
    Baseline: one ``SELECT`` by primary key of a ``consent_state``-shaped table holding one row per subject.

Target and baseline alternate in rounds after a warm-up; ratios are target / baseline of the same run.
``--profile DIR`` then records the preferences service's worker with py-spy under profile-read load
(not measured for the ratios; stacks go to DIR).
Targets are printed as PASS or MISS (a miss does not fail the run); a wrong or failed answer does (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec

from bench._http1 import HTTP1Client
from bench._load import (
    SHIPPED_POLLING,
    LoadResult,
    Target,
    fast_load_client,
    machine_info,
    merge,
    process_tree_cpu_seconds,
    run,
    run_load,
)
from bench._raw_insert_app import POOL_MAX, STATE_COLUMNS, STATE_TABLE
from bench._report import (
    command_line,
    emit_report,
    print_errors,
    print_load_table,
    print_machine,
    print_ratios,
    print_targets,
)
from bench.consent import (
    CLIENT_BOUND_SHARE,
    ERROR_EXAMPLES,
    EVIDENCE,
    PLAIN_DSN,
    PURPOSE,
    Problems,
    PySpy,
    Side,
    _create_raw_schema,
    _drop_schema,
    _postmaster,
    _ratio,
    _status_problem,
    _verdict,
    log,
    print_profile,
    raw_app,
    raw_write_check,
    read_check,
    summarize_load,
    summarize_profile,
    worker_to_profile,
)
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError

__all__ = ["SCENARIOS", "TARGETS", "main"]

SCENARIOS: Final = ("answer", "profile")
SIDES: Final = {"answer": ("preferences", "raw_insert"), "profile": ("preferences", "raw_select")}
"""Per scenario: the measured side, then its baseline."""
TARGETS: Final = {
    "answer": {"throughput_ratio": 0.50, "p99_ms": 50.0},
    "profile": {"throughput_rps": 4_000.0, "p99_ms": 20.0},
}
QUIZ_ID: Final = "style"
LOCALE: Final = "en"
SOURCE: Final = "bench"
SIZES: Final = ("XS", "S", "M", "L", "XL", "XXL")
CATEGORIES: Final = ("dresses", "jeans", "knitwear", "outerwear", "shoes", "tops", "accessories")
BRANDS: Final = ("Acme", "Nordwind", "Kivi", "Fjell", "Saga")


# --- answers ---------------------------------------------------------------------------------------


class _Option(msgspec.Struct):
    id: str


class _Question(msgspec.Struct):
    id: str
    kind: str
    options: list[_Option]
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None


class _Progress(msgspec.Struct):
    answered: int
    total: int


class _Session(msgspec.Struct):
    id: str
    subject_id: str
    quiz_id: str
    status: str
    current_question: _Question | None
    answers: dict[str, Any]
    progress: _Progress


class _Profile(msgspec.Struct):
    subject_id: str
    fields: dict[str, Any]
    provenance: dict[str, Any]


_decode_session = msgspec.json.Decoder(_Session).decode


def session_problem(response: httpx.Response, expected: int, subject_id: str) -> tuple[_Session | None, str | None]:
    """The session an answer or a start returned, or what is wrong with it."""
    problem = _status_problem(response, expected)
    if problem:
        return None, problem
    try:
        session = _decode_session(response.content)
    except msgspec.DecodeError as exc:
        return None, f"unexpected body ({exc}): {response.text[:300]}"
    if (session.subject_id, session.quiz_id, session.status) != (subject_id, QUIZ_ID, "in_progress"):
        return None, f"session {session.subject_id}/{session.quiz_id}/{session.status}, expected {subject_id}/{QUIZ_ID}"
    question = session.current_question
    if question is not None and question.kind in ("single", "image", "multiple") and not question.options:
        return None, f"question {question.id} ({question.kind}) without options"
    return session, None


def pick_answer(question: _Question, rng: random.Random) -> Any:
    """A valid answer to ``question``: an option id, some option ids, or a value on the scale."""
    ids = [option.id for option in question.options]
    if question.kind == "multiple":
        low = max(1, int(question.min or 1))
        high = min(len(ids), int(question.max or len(ids)))
        return rng.sample(ids, rng.randint(low, max(low, high)))
    if question.kind == "scale":
        low, high = question.min or 0, question.max or 0
        step = question.step or 1
        if isinstance(low, int) and isinstance(high, int) and isinstance(step, int):
            return low + step * rng.randint(0, (high - low) // step)
        return low
    return rng.choice(ids)


@dataclass
class QuizSession:
    id: str
    subject_id: str
    question: _Question


@dataclass
class Quiz:
    """Sessions ready to be answered, and counts of what the answer scenario did besides answering."""

    url: str
    headers: Mapping[str, str]
    subjects: list[str]
    ready: list[QuizSession] = field(default_factory=list)
    started: int = 0
    inline_starts: int = 0
    finished: int = 0
    answers_per_session: float = 8.0

    async def start(self, client: HTTP1Client, subject_id: str) -> tuple[QuizSession | None, str | None]:
        body = msgspec.json.encode({"quiz_id": QUIZ_ID, "locale": LOCALE})
        try:
            response = await client.request(
                "POST", f"{self.url}/v1/subjects/{subject_id}/quiz-sessions", headers=self.headers, content=body
            )
        except httpx.HTTPError as exc:
            return None, f"start: {type(exc).__name__}: {exc}"
        session, problem = session_problem(response, 201, subject_id)
        if problem or session is None:
            return None, f"start: {problem}"
        if session.current_question is None or session.progress.answered != 0:
            return None, f"start: a new session without a first question: {response.text[:300]}"
        self.started += 1
        return QuizSession(session.id, subject_id, session.current_question), None

    async def fill(self, client: HTTP1Client, count: int, concurrency: int, problems: Problems) -> None:
        """Start sessions (untimed) until ``count`` are ready."""
        rng = random.Random(len(self.ready) + self.started)
        needed = max(0, count - len(self.ready))
        slots = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one() -> None:
            async with slots:
                session, problem = await self.start(client, rng.choice(self.subjects))
            if session is not None:
                self.ready.append(session)
            elif problem:
                failures.append(problem)

        await asyncio.gather(*(one() for _ in range(needed)))
        problems.add("answer session starts", len(failures), failures[:ERROR_EXAMPLES])


async def quiz_load(
    client: HTTP1Client,
    quiz: Quiz,
    *,
    concurrency: int,
    seconds: float,
    server_pids: Callable[[], Mapping[str, int]] | None = None,
) -> LoadResult:
    """:func:`bench._load.run_load` for a conversation: each worker answers its own session's questions.

    Only answers count as requests and are timed; a worker whose session ends takes a ready one, or
    starts one itself when none is left (inside the round's time). Unfinished sessions go back to
    ``quiz.ready`` afterwards.
    """
    result = LoadResult()
    clock = time.perf_counter
    answers_done = 0
    sessions_done = 0

    def failed(what: str, problem: str) -> None:
        result.errors += 1
        if len(result.error_examples) < ERROR_EXAMPLES:
            result.error_examples.append(f"{what}: {problem}")

    async def worker(deadline: float, number: int) -> None:
        nonlocal answers_done, sessions_done
        rng = random.Random(number * 7919 + quiz.started)
        session: QuizSession | None = None
        while clock() < deadline:
            if session is None:
                if quiz.ready:
                    session = quiz.ready.pop()
                else:
                    quiz.inline_starts += 1
                    session, problem = await quiz.start(client, rng.choice(quiz.subjects))
                    if session is None:
                        failed("inline start", problem or "?")
                        continue
            question = session.question
            answer = pick_answer(question, rng)
            body = msgspec.json.encode({"question_id": question.id, "answer": answer})
            url = f"{quiz.url}/v1/quiz-sessions/{session.id}/answers"
            started = clock()
            result.requests += 1
            try:
                response = await client.request("POST", url, headers=quiz.headers, content=body)
            except httpx.HTTPError as exc:
                failed(f"POST {url}", f"{type(exc).__name__}: {exc}")
                session = None
                continue
            took = clock() - started
            answered, problem = session_problem(response, 200, session.subject_id)
            if answered is not None and problem is None:
                nxt = answered.current_question
                if answered.id != session.id:
                    problem = f"answered session {answered.id}, expected {session.id}"
                elif question.id not in answered.answers:
                    problem = f"the answer to {question.id} is not in the session: {sorted(answered.answers)}"
                elif nxt is not None and nxt.id == question.id:
                    problem = f"still at question {question.id} after answering it"
            if problem is not None or answered is None:
                failed(f"POST {url} {body.decode()}", problem or "?")
                session = None
                continue
            result.latencies.append(took)
            answers_done += 1
            if answered.current_question is None:
                sessions_done += 1
                quiz.finished += 1
                session = None
            else:
                session.question = answered.current_question
        if session is not None:
            quiz.ready.append(session)

    collecting = gc.isenabled()
    gc.disable()
    try:
        server_before = process_tree_cpu_seconds(server_pids()) if server_pids else None
        cpu_before = time.process_time()
        started = clock()
        await asyncio.gather(*(worker(started + seconds, number) for number in range(concurrency)))
        result.elapsed = clock() - started
        result.client_cpu = time.process_time() - cpu_before
        if server_pids and server_before is not None:
            server_after = process_tree_cpu_seconds(server_pids())
            if server_after is not None:
                result.server_cpu = {
                    name: server_after[name] - server_before[name] for name in server_after.keys() & server_before
                }
    finally:
        if collecting:
            gc.enable()
    if sessions_done:
        quiz.answers_per_session = answers_done / sessions_done
    return result


# --- the run ---------------------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    running: RunningPlatform
    url: str
    raw_url: str
    raw_schema: str
    raw_pid: int
    postmaster_pid: int | None
    problems: Problems = field(default_factory=Problems)

    @property
    def preferences_pid(self) -> int:
        return self.running.platform.processes["preferences"].pid

    def pids(self, app_pid: int) -> Callable[[], dict[str, int]]:
        def named() -> dict[str, int]:
            pids = {"app": app_pid}
            if self.postmaster_pid is not None:
                pids["postgres"] = self.postmaster_pid
            return pids

        return named


async def alternate(
    scenario: str,
    sides: Sequence[Side],
    load: Callable[[Side, float, Callable[[], dict[str, int]] | None], Awaitable[LoadResult]],
    context: Context,
) -> None:
    """Warm each side up, then the rounds, alternating which side goes first (as ``bench.consent``)."""
    args = context.args
    for side in sides:
        log(f"warm-up        {scenario:<8} {side.name:<11} {args.warmup:g}s")
        context.problems.add_result(f"{scenario} warm-up ({side.name})", await load(side, args.warmup, None))
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


def cycling(
    client: HTTP1Client, targets: Sequence[Target], concurrency: int
) -> Callable[[float, Callable[[], dict[str, int]] | None], Awaitable[LoadResult]]:
    """``run_load`` over ``targets``, each call starting where the previous one stopped."""
    offset = 0

    async def load(seconds: float, pids: Callable[[], dict[str, int]] | None) -> LoadResult:
        nonlocal offset
        result = await run_load(
            client, [*targets[offset:], *targets[:offset]], concurrency=concurrency, seconds=seconds, server_pids=pids
        )
        offset = (offset + result.requests) % len(targets)
        return result

    return load


def insert_targets(context: Context, subjects: Sequence[str], headers: Mapping[str, str]) -> list[Target]:
    rng = random.Random(7)
    targets = []
    for _ in range(4 * len(subjects)):
        subject_id = rng.choice(subjects)
        action = rng.choice(("give", "withdraw"))
        body = msgspec.json.encode({"purpose": PURPOSE, "action": action, "source": "import", "evidence": EVIDENCE})
        targets.append(
            Target(
                f"{context.raw_url}/raw/subjects/{subject_id}/events",
                raw_write_check(subject_id, action),
                headers,
                method="POST",
                body=body,
            )
        )
    return targets


def profile_fields(number: int, rng: random.Random) -> dict[str, Any]:
    return {
        "first_name": f"Shopper {number}",
        "preferred_language": rng.choice(("en", "sv", "nb", "et")),
        "clothing_size": rng.choice(SIZES),
        "sizes": {"tops": rng.choice(SIZES), "shoes": rng.choice((38, 39, 40, 41, 42, 43))},
        "favourite_categories": rng.sample(CATEGORIES, 3),
        "favourite_brands": rng.sample(BRANDS, 2),
    }


def profile_check(subject_id: str, fields: Mapping[str, Any]) -> Callable[[httpx.Response], str | None]:
    wanted = dict(fields)

    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 200)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Profile)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        if body.subject_id != subject_id or body.fields != wanted:
            return f"{body.subject_id}: {body.fields}, expected {subject_id}: {wanted}"
        if set(body.provenance) != set(wanted):
            return f"provenance for {sorted(body.provenance)}, expected {sorted(wanted)}"
        return None

    return check


async def seed_profiles(
    client: HTTP1Client, connection: asyncpg.Connection, context: Context, headers: Mapping[str, str]
) -> tuple[dict[str, list[Target]], float]:
    """``--profiles`` profiles through PATCH (checked), one baseline row per subject by COPY; the targets."""
    args = context.args
    rng = random.Random(5)
    subjects = [f"profile-{number:05d}" for number in range(args.profiles)]
    fields = {subject: profile_fields(number, rng) for number, subject in enumerate(subjects)}
    slots = asyncio.Semaphore(args.concurrency)
    failures: list[str] = []
    started = time.perf_counter()

    async def one(subject: str) -> None:
        body = msgspec.json.encode({"fields": fields[subject], "source": SOURCE})
        url = f"{context.url}/v1/subjects/{subject}/profile"
        async with slots:
            try:
                response = await client.request("PATCH", url, headers=headers, content=body)
            except httpx.HTTPError as exc:
                failures.append(f"PATCH {url}: {type(exc).__name__}: {exc}")
                return
        problem = profile_check(subject, fields[subject])(response)
        if problem:
            failures.append(f"PATCH {url}: {problem}")

    await asyncio.gather(*(one(subject) for subject in subjects))
    seconds = time.perf_counter() - started
    context.problems.add("profile seeding", len(failures), failures[:ERROR_EXAMPLES])
    now = datetime.now(UTC)
    event_ids = {subject: str(uuid.UUID(int=rng.getrandbits(128), version=4)) for subject in subjects}
    await connection.copy_records_to_table(
        STATE_TABLE,
        records=[(subject, PURPOSE, "given", now, event_ids[subject], None, None) for subject in subjects],
        columns=STATE_COLUMNS,
        schema_name=context.raw_schema,
    )
    await connection.execute(f'VACUUM ANALYZE "{context.raw_schema}".{STATE_TABLE}')
    order = list(subjects)
    random.Random(11).shuffle(order)
    return {
        "preferences": [
            Target(f"{context.url}/v1/subjects/{s}/profile", profile_check(s, fields[s]), headers) for s in order
        ],
        "raw_select": [
            Target(
                f"{context.raw_url}/raw/subjects/{s}/consents",
                read_check(s, [(PURPOSE, "given", event_ids[s])]),
                headers,
            )
            for s in order
        ],
    }, seconds


async def measure(context: Context) -> dict[str, Any]:
    args = context.args
    measured: dict[str, Any] = {}
    connection = await asyncpg.connect(PLAIN_DSN)
    try:
        async with AsyncExitStack() as stack:
            clients = {
                name: await stack.enter_async_context(fast_load_client(args.concurrency))
                for name in ("preferences", "raw_insert", "raw_select", "setup")
            }
            headers = {**context.running.service_headers("preferences"), "content-type": "application/json"}
            subjects = [f"quizzer-{number:05d}" for number in range(args.subjects)]
            quiz = Quiz(context.url, headers, subjects)
            log(f"starting {4 * args.concurrency} quiz sessions")
            await quiz.fill(clients["setup"], 4 * args.concurrency, args.concurrency, context.problems)
            raw_inserts = cycling(clients["raw_insert"], insert_targets(context, subjects, headers), args.concurrency)

            async def answer_load(side: Side, seconds: float, pids: Callable[[], dict[str, int]] | None) -> LoadResult:
                if side.name == "raw_insert":
                    return await raw_inserts(seconds, pids)
                last = side.results[-1].throughput if side.results else 0.0
                expected = (last or 1_000.0) * seconds * 1.5 / max(quiz.answers_per_session, 1.0)
                await quiz.fill(
                    clients["setup"], int(expected) + 2 * args.concurrency, args.concurrency, context.problems
                )
                return await quiz_load(
                    side.client, quiz, concurrency=args.concurrency, seconds=seconds, server_pids=pids
                )

            answer_sides = [
                Side("preferences", clients["preferences"], context.pids(context.preferences_pid)),
                Side("raw_insert", clients["raw_insert"], context.pids(context.raw_pid)),
            ]
            await alternate("answer", answer_sides, answer_load, context)
            measured["answer"] = {side.name: side.results for side in answer_sides}
            measured["quiz"] = {
                "sessions_started": quiz.started,
                "inline_starts": quiz.inline_starts,
                "sessions_finished": quiz.finished,
                "answers_per_finished_session": round(quiz.answers_per_session, 2),
            }

            log(f"seeding {args.profiles} profiles through PATCH")
            headers = {**context.running.service_headers("preferences"), "content-type": "application/json"}
            targets, seed_seconds = await seed_profiles(clients["setup"], connection, context, headers)
            measured["seed"] = {"profiles": args.profiles, "seconds": round(seed_seconds, 2)}
            loads = {name: cycling(clients[name], targets[name], args.concurrency) for name in targets}

            async def read_load(side: Side, seconds: float, pids: Callable[[], dict[str, int]] | None) -> LoadResult:
                return await loads[side.name](seconds, pids)

            read_sides = [
                Side("preferences", clients["preferences"], context.pids(context.preferences_pid)),
                Side("raw_select", clients["raw_select"], context.pids(context.raw_pid)),
            ]
            await alternate("profile", read_sides, read_load, context)
            measured["profile"] = {side.name: side.results for side in read_sides}
            if args.profile:
                measured["py_spy"] = await profile_reads(context, loads["preferences"])
    finally:
        await connection.close()
    return measured


async def profile_reads(
    context: Context, load: Callable[[float, Callable[[], dict[str, int]] | None], Awaitable[LoadResult]]
) -> dict[str, Any]:
    """py-spy on the preferences worker under profile-read load (not used for the ratios)."""
    spied = worker_to_profile(context.preferences_pid)
    if spied is None:
        return {}
    executable, worker = spied
    directory = Path(context.args.profile)
    output = directory / "preferences-profile.txt"
    log(f"profiling      profile  preferences py-spy -> {output}")
    spy = PySpy(executable, worker, output)
    await asyncio.sleep(1.0)  # attached before the load starts
    try:
        context.problems.add_result("profile py-spy", await load(context.args.profile_seconds, None))
    finally:
        spy.stop()
    return {"worker_pid": worker, "directory": str(directory), "profile": summarize_profile(output)}


# --- the report ------------------------------------------------------------------------------------


def build_report(
    measured: Mapping[str, Any], context: Context, machine: dict[str, Any], command: str
) -> dict[str, Any]:
    args = context.args
    results: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for scenario in SCENARIOS:
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
    verdicts: list[dict[str, Any]] = []

    def judge(scenario: str, metric: str, value: float | None, target: float, at_least: bool) -> None:
        verdict: dict[str, Any] = {
            "scenario": scenario,
            "metric": metric,
            "target": f"{'>=' if at_least else '<='} {target:g}",
            "value": value,
            "verdict": _verdict(value, target, at_least),
        }
        if metric == "p99 ms":
            verdict["needs_rps_above"] = round(args.concurrency / (target / 1000.0))
        verdicts.append(verdict)

    if "answer" in results:
        answer = TARGETS["answer"]
        judge("answer", "throughput / raw insert", ratios["answer"]["throughput"], answer["throughput_ratio"], True)
        judge("answer", "p99 ms", results["answer"]["preferences"]["p99_ms"], answer["p99_ms"], False)
    if "profile" in results:
        profile = TARGETS["profile"]
        judge("profile", "req/s", results["profile"]["preferences"]["throughput_rps"], profile["throughput_rps"], True)
        judge("profile", "p99 ms", results["profile"]["preferences"]["p99_ms"], profile["p99_ms"], False)
    return {
        "benchmark": "preferences",
        "command": command,
        "machine": machine,
        "settings": {
            "backend": "postgres",
            "server": "granian, 1 worker per process (preferences service and raw app alike)",
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "subjects": args.subjects,
            "profiles": args.profiles,
            "quiz": f"{QUIZ_ID} ({LOCALE})",
            "raw_pool_max": POOL_MAX,
            "client": "bench._http1 (asyncio + httptools), HTTP/1.1 keep-alive, same process as the benchmark",
        },
        "quiz": measured.get("quiz"),
        "seed": measured.get("seed"),
        "py_spy": measured.get("py_spy"),
        "results": results,
        "ratios": ratios,
        "targets": verdicts,
        "errors": {
            "total": context.problems.total,
            "by_phase": context.problems.counts,
            "examples": context.problems.examples,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print_machine(report, "preferences service on PostgreSQL vs a bare asyncpg baseline (same server, same run)")
    print(
        f"settings: {settings['rounds']} rounds x {settings['seconds']:g}s per side, alternating; warm-up "
        f"{settings['warmup_seconds']:g}s; concurrency {settings['concurrency']}; quiz {settings['quiz']} over "
        f"{settings['subjects']} subjects; {settings['profiles']} profiles; {settings['server']}; "
        f"raw pool <= {settings['raw_pool_max']}; client: bench._http1 HTTP/1.1 in this process"
    )
    if report.get("quiz"):
        quiz = report["quiz"]
        print(
            f"quiz    : {quiz['sessions_started']} sessions started ({quiz['inline_starts']} inside a round), "
            f"{quiz['sessions_finished']} answered to the end, {quiz['answers_per_finished_session']:g} answers each"
        )
    if report.get("seed"):
        seed = report["seed"]
        print(f"seed    : {seed['profiles']} profiles through PATCH in {seed['seconds']:g} s")
    print()
    print_load_table(report, SCENARIOS)
    print()
    print_ratios(report, SIDES, label_width=26)
    print()
    print_targets(report, scenario_width=9)
    bound = [
        scenario
        for scenario in SCENARIOS
        if any(row["client_bound"] for row in report["results"].get(scenario, {}).values())
    ]
    if bound:
        print(
            f"note: in {', '.join(bound)} the load generator (same process) used more than "
            f"{CLIENT_BOUND_SHARE:.0%} of a core and more than the app; app ms/req is the steadier figure there."
        )
    if report.get("py_spy"):
        print()
        print_profile(report["py_spy"], "preferences", ("profile",))
    print_errors(report)


# --- entry point -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.preferences", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measured load round (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="load rounds per side (default 4; even balances order)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per side and scenario (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--subjects", type=int, default=5_000, help="subjects the quiz sessions spread over")
    parser.add_argument("--profiles", type=int, default=2_000, help="profiles seeded and read (default 2000)")
    parser.add_argument("--profile", metavar="DIR", help="afterwards, py-spy the preferences worker; stacks go to DIR")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="profiled read load (default 5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.profile_seconds <= 0:
        parser.error("--seconds and --profile-seconds must be > 0, --warmup >= 0")
    if min(args.rounds, args.concurrency, args.subjects, args.profiles) < 1:
        parser.error("--rounds, --concurrency, --subjects and --profiles must be >= 1")
    return args


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
        with tempfile.TemporaryDirectory(prefix="tillit-bench-preferences-") as tmp, ExitStack() as stack:
            log("starting the platform (postgres, granian)")
            running = stack.enter_context(
                running_platform("postgres", Path(tmp) / "platform", {"TILLIT_SERVER": "granian", **SHIPPED_POLLING})
            )
            raw_schema = f"{running.env['TILLIT_DATABASE_SCHEMA_PREFIX']}bench_raw"
            stack.callback(lambda: run(_drop_schema(raw_schema)))
            run(_create_raw_schema(raw_schema))
            log("starting the raw asyncpg app (granian)")
            raw_url, raw_pid = stack.enter_context(raw_app(PLAIN_DSN, raw_schema, Path(tmp) / "raw_app.log"))
            context = Context(
                args=args,
                running=running,
                url=running.url("preferences"),
                raw_url=raw_url,
                raw_schema=raw_schema,
                raw_pid=raw_pid,
                postmaster_pid=run(_postmaster()),
            )
            measured = run(measure(context))
            log("stopping")
    except (PlatformError, OSError, asyncpg.PostgresError, httpx.HTTPError, RuntimeError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    assert context is not None
    report = build_report(measured, context, machine, command_line("bench.preferences", argv))
    return emit_report(report, args.json, print_report, context.problems.total)


if __name__ == "__main__":
    raise SystemExit(main())
