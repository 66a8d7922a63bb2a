"""A small closed-loop HTTP load generator and measuring helpers shared by the benchmarks.

The load generator runs in the benchmark's own Python process, so on a small machine it competes with
the servers it measures for the same cores. It is kept as light as it can be while still checking every
answer: one asyncio loop (uvloop when installed), one ``httpx.AsyncClient`` per target over HTTP/1.1 with
as many keep-alive connections as there are workers, and no work per request beyond the request, a
clock read and the caller's check. ``LoadResult.client_cpu_share`` says how much of a core it took.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import httpx
import msgspec

from bench._http1 import HTTP1Client
from tillit.settings import Settings

SHIPPED_POLLING: Final = {
    "TILLIT_WEBHOOK_POLL_SECONDS": str(
        next(field.default for field in msgspec.structs.fields(Settings) if field.name == "webhook_poll_seconds")
    )
}
"""The webhook outbox polled as shipped (every 2 s). ``tests.platform`` polls it five times a second so
that webhook tests finish quickly, and each poll costs the gateway and the consent service ~4 ms of CPU:
~20 and ~16 ms a second, ~2 % of this machine, that no shop's platform spends."""

__all__ = [
    "SHIPPED_POLLING",
    "Check",
    "HTTPClient",
    "Load",
    "LoadError",
    "LoadResult",
    "Target",
    "alternate_rounds",
    "fast_load_client",
    "load_client",
    "machine_info",
    "merge",
    "percentile",
    "process_tree_cpu_seconds",
    "run",
    "run_load",
]

T = TypeVar("T")

Check = Callable[[httpx.Response], str | None]
"""Looks at one answer and returns what is wrong with it, or ``None`` when it is the expected one."""

ERROR_EXAMPLES = 5


class HTTPClient(Protocol):
    """What :func:`run_load` needs of a client: ``httpx.AsyncClient`` and :class:`HTTP1Client` both fit."""

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = ..., content: bytes | None = ...
    ) -> httpx.Response: ...


class LoadError(RuntimeError):
    """Some requests failed; a benchmark over wrong answers measures nothing, so it stops."""


@dataclass(frozen=True)
class Target:
    """One request to repeat: where, with which headers (and body), and how to tell a good answer.

    ``body`` is sent as it is, so a benchmark encodes it once up front rather than once per request;
    give the matching ``content-type`` in ``headers``.
    """

    url: str
    check: Check
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: bytes | None = None


@dataclass
class LoadResult:
    """What one closed-loop run (or several merged) measured."""

    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    """Seconds per successful request, send to fully read answer."""
    error_examples: list[str] = field(default_factory=list)
    client_cpu: float = 0.0
    """CPU seconds this (the load generator's) process used during the run."""
    server_cpu: dict[str, float] | None = None
    """CPU seconds each measured process (with its descendants) used during the run, by the caller's name."""

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall-clock time."""
        return (self.requests - self.errors) / self.elapsed if self.elapsed else 0.0

    @property
    def client_cpu_share(self) -> float:
        """Fraction of one core the load generator used."""
        return self.client_cpu / self.elapsed if self.elapsed else 0.0

    @property
    def server_cpu_share(self) -> float | None:
        """Cores the measured processes used on average (1.0 = one core busy the whole run)."""
        if self.server_cpu is None or not self.elapsed:
            return None
        return sum(self.server_cpu.values()) / self.elapsed

    @property
    def server_cpu_per_request_ms(self) -> float | None:
        """Server CPU milliseconds per successful request; steadier than throughput on a shared machine."""
        by_process = self.server_cpu_per_request_ms_by_process()
        return None if by_process is None else sum(by_process.values())

    def server_cpu_per_request_ms_by_process(self) -> dict[str, float] | None:
        done = self.requests - self.errors
        if self.server_cpu is None or not done:
            return None
        return {name: 1000.0 * seconds / done for name, seconds in self.server_cpu.items()}

    def latency_ms(self, q: float) -> float:
        return 1000.0 * percentile(self.latencies, q)

    def raise_for_errors(self, what: str) -> None:
        if self.errors:
            examples = "\n  ".join(self.error_examples)
            raise LoadError(f"{what}: {self.errors} of {self.requests} requests failed, e.g.\n  {examples}")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of unsorted ``values``; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def merge(results: Iterable[LoadResult]) -> LoadResult:
    """Several runs as one: requests, time and CPU add up, latencies are pooled."""
    merged = LoadResult(server_cpu={})
    for result in results:
        merged.requests += result.requests
        merged.errors += result.errors
        merged.elapsed += result.elapsed
        merged.latencies.extend(result.latencies)
        merged.error_examples.extend(result.error_examples[: ERROR_EXAMPLES - len(merged.error_examples)])
        merged.client_cpu += result.client_cpu
        if result.server_cpu is None or merged.server_cpu is None:
            merged.server_cpu = None
        else:
            for name, seconds in result.server_cpu.items():
                merged.server_cpu[name] = merged.server_cpu.get(name, 0.0) + seconds
    return merged


def load_client(concurrency: int, timeout: float = 30.0) -> httpx.AsyncClient:
    """An HTTP/1.1 client holding at most ``concurrency`` connections, all kept alive between requests."""
    return httpx.AsyncClient(
        http1=True,
        http2=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        timeout=timeout,
    )


def fast_load_client(concurrency: int, timeout: float = 30.0) -> HTTP1Client:
    """Like :func:`load_client` for about a tenth of the client CPU per request (see :mod:`bench._http1`).

    Use it where the load generator would otherwise limit throughput: plain ``http://`` only.
    """
    return HTTP1Client(concurrency, timeout)


async def run_load(
    client: HTTPClient,
    targets: Sequence[Target],
    *,
    concurrency: int,
    seconds: float,
    server_pids: Callable[[], Mapping[str, int]] | None = None,
) -> LoadResult:
    """``concurrency`` workers send requests back to back for ``seconds``, cycling through ``targets``.

    A closed loop: each worker waits for its answer before sending the next request, so the server is
    never offered more than ``concurrency`` requests at a time and throughput is what it sustains.
    Requests in flight at the deadline are finished and counted; ``elapsed`` runs until the last one.
    ``server_pids`` (called at start and end) names the processes whose CPU time is measured; the
    load generator's own CPU time is always measured. Garbage collection is paused during the run so
    that the client does not add its own pauses to the servers' latencies.
    """
    if not targets:
        raise ValueError("no targets")
    result = LoadResult()
    picks = itertools.cycle(targets)
    clock = time.perf_counter

    def failed(target: Target, problem: str) -> None:
        result.errors += 1
        if len(result.error_examples) < ERROR_EXAMPLES:
            result.error_examples.append(f"{target.method} {target.url}: {problem}")

    async def worker(deadline: float) -> None:
        while clock() < deadline:
            target = next(picks)
            started = clock()
            result.requests += 1
            try:
                response = await client.request(target.method, target.url, headers=target.headers, content=target.body)
            except httpx.HTTPError as exc:
                failed(target, f"{type(exc).__name__}: {exc}")
                continue
            took = clock() - started
            problem = target.check(response)
            if problem is None:
                result.latencies.append(took)
            else:
                failed(target, problem)

    collecting = gc.isenabled()
    gc.disable()
    try:
        server_before = process_tree_cpu_seconds(server_pids()) if server_pids else None
        cpu_before = time.process_time()
        started = clock()
        await asyncio.gather(*(worker(started + seconds) for _ in range(concurrency)))
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
    return result


Load = Callable[[float, Callable[[], Mapping[str, int]] | None], Awaitable[LoadResult]]
"""One side's load: ``(seconds, server_pids)`` -> its result."""


async def alternate_rounds(
    loads: Mapping[str, Load],
    *,
    rounds: int,
    seconds: float,
    warmup: float,
    server_pids: Callable[[str], Callable[[], Mapping[str, int]]],
    record: Callable[[str, LoadResult], None],
    log: Callable[[str], None],
) -> dict[str, list[LoadResult]]:
    """Warm every side up, then measure ``rounds`` rounds per side, the order reversed every round.

    Alternating the order spreads the machine's drift (other work, thermal state) evenly over the
    sides, so a ratio between them means something on a shared machine. ``record`` sees every result,
    warm-ups included (``"<side> warm-up"``, ``"<side> round N"``), to check the answers.
    """
    sides = tuple(loads)
    results: dict[str, list[LoadResult]] = {side: [] for side in sides}
    for side in sides:
        log(f"warm-up        {side:<8} {warmup:g}s")
        record(f"{side} warm-up", await loads[side](warmup, None))
    for number in range(rounds):
        for side in sides if number % 2 == 0 else tuple(reversed(sides)):
            result = await loads[side](seconds, server_pids(side))
            record(f"{side} round {number + 1}", result)
            results[side].append(result)
            log(
                f"round {number + 1}/{rounds}      {side:<8} {result.throughput:8.0f} req/s"
                f"  p50 {result.latency_ms(0.50):6.1f} ms  p99 {result.latency_ms(0.99):6.1f} ms"
            )
    return results


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed: the load generator then takes less of the CPU."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


_PROC = Path("/proc")


def process_tree_cpu_seconds(roots: Mapping[str, int]) -> dict[str, float] | None:
    """User + system CPU seconds of each named root process with all its descendants, from ``/proc``.

    None where there is no ``/proc``. Processes outside the trees (a PostgreSQL server) are not counted.

    Servers may run their app in child processes (granian's worker is one), so the tree is walked.
    Children that exited and were reaped are included through their parent's ``cutime``/``cstime``.
    """
    if not _PROC.is_dir():
        return None
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) is in parentheses and may itself hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    names = {pid: name for name, pid in roots.items()}
    totals = dict.fromkeys(roots, 0)
    for pid, used in ticks.items():
        walk, depth = pid, 0
        while walk > 1 and depth < 64:
            if walk in names:
                totals[names[walk]] += used
                break
            walk, depth = parents.get(walk, 0), depth + 1
    per_second = os.sysconf("SC_CLK_TCK")
    return {name: total / per_second for name, total in totals.items()}


def machine_info(packages: Sequence[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on; ``packages`` adds installed versions."""
    cpu_model = None
    cpuinfo = _PROC / "cpuinfo"
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model or platform.processor() or None,
        "load_average": [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "versions": versions,
    }
