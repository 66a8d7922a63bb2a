"""A personalization decision through the gateway against the single profile release, in one run.

Run from the repository root::

    .venv/bin/python -m bench.decisions [--json] [--seconds 5] [--rounds 4] [--concurrency 32] [--shoppers 2000]
                                        [--profile DIR]

(about two minutes with the defaults).

The whole platform runs on PostgreSQL (granian, one worker per process), without the repository's
demo definitions. ``--shoppers`` shoppers are seeded as in ``bench.gateway`` (a profile, a consent to
``personalize.content.profiled``), and the rules service gets 20 segments and 30 merchandising rules
of that purpose (filters, boosts, buries, exclusions, pins and a limit, most behind a segment) and one
content slot with an A/B experiment. Two sides are then loaded in alternating rounds:

``decision``
    ``POST /v1/subjects/{id}/decisions?purpose=...`` on the gateway with a visit context, the slot
    and 200 candidate products: everything a profile release does (token, consent state, profile,
    release rule, one audit row) plus the rules service's decision on the filtered profile. Every
    answer must name the subject and release id, fill the slot and answer products.
``release``
    The baseline: ``GET /v1/subjects/{id}/profile`` for the same purpose (what ``bench.gateway``
    measures), against the same processes.

``--profile DIR`` then records the gateway's and the rules service's workers with py-spy under
decision load, and the gateway's under release load (not measured for the ratios; stacks go to DIR).

Targets (the issue's): decision throughput ≥ 50 % of the release's, p99 ≤ 40 ms. Printed as PASS or
MISS (a miss does not fail the run); a wrong or failed answer does (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx
import msgspec

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
from bench._report import command_line, emit_report, print_errors, print_machine, print_targets
from bench.consent import (
    _PLUMBING,
    Problems,
    PySpy,
    _descendants,
    _postmaster,
    _py_spy,
    _ratio,
    _status_problem,
    _verdict,
    log,
    summarize_profile,
)
from bench.gateway import CHANNEL, PURPOSE, Seeded, cycling, release_check, seed
from bench.preferences import BRANDS, CATEGORIES
from tests.platform import RunningPlatform, postgres_available, running_platform
from tillit.launcher import PlatformError

__all__ = ["SIDES", "TARGETS", "definitions", "main"]

SIDES: Final = ("decision", "release")
BASELINE: Final = "release"
PROCESSES: Final = {
    "decision": ("gateway", "consent", "preferences", "rules", "postgres"),
    "release": ("gateway", "consent", "preferences", "postgres"),
}
TARGETS: Final = {"decision": {"throughput_ratio": 0.5, "p99_ms": 40.0}}
SLOT: Final = "home.hero"
CANDIDATES: Final = 200
SEGMENTS: Final = 20
RULES: Final = 30
SHOP_BRANDS: Final = (*BRANDS, "Gucci", "Armani", "Hope", "Arket", "Ganni")


def _leaf(field: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


def definitions() -> list[dict[str, Any]]:
    """20 segments, 30 rules and one slot of the purpose, in an order the rules service accepts."""
    segments: list[dict[str, Any]] = []
    for category in CATEGORIES:
        segments.append(_segment(f"likes-{category}", _leaf("profile.favourite_categories", "contains", category)))
    for brand in BRANDS:
        segments.append(_segment(f"fan-{brand.lower()}", _leaf("profile.favourite_brands", "contains", brand)))
    segments += [
        _segment("first-visit", _leaf("context.visit_count", "lte", 1)),
        _segment("returning", _leaf("context.visit_count", "gte", 2)),
        _segment("lapsed", {"any": [_leaf("context.days_since_last_visit", "gte", 60)]}),
        _segment("small-sizes", _leaf("profile.clothing_size", "in", ["XS", "S"])),
        _segment("big-feet", _leaf("profile.sizes.shoes", "gte", 42)),
        _segment("nordic-language", _leaf("profile.preferred_language", "in", ["sv", "nb"])),
        _segment(
            "denim-regular",
            {"all": [{"segment": "likes-jeans"}, {"segment": "returning"}, {"not": {"segment": "lapsed"}}]},
        ),
        _segment("fashion-fan", {"any": [{"segment": "likes-dresses"}, {"segment": "likes-tops"}]}),
    ]
    assert len(segments) == SEGMENTS, len(segments)
    rules: list[dict[str, Any]] = [
        _rule(
            "hide-full-price-lapsed", "filter", when={"segment": "lapsed"}, match=_leaf("product.on_sale", "eq", False)
        ),
        _rule(
            "no-kids-for-fashion",
            "filter",
            when={"segment": "fashion-fan"},
            match=_leaf("product.department", "eq", "kids"),
        ),
        _rule("hide-limited", "filter", match=_leaf("product.tags", "contains", "limited")),
        _rule("gucci-apart", "exclude", exclude={"attribute": "brand", "values": ["Gucci", "Armani"]}),
        _rule("hope-apart", "exclude", exclude={"attribute": "brand", "values": ["Hope", "Ganni"]}),
        _rule(
            "favourite-brands",
            "boost",
            weight=10,
            match={"field": "product.brand", "op": "in", "value_from": "profile.favourite_brands"},
        ),
        _rule(
            "favourite-categories",
            "boost",
            weight=5,
            match={"field": "product.category", "op": "in", "value_from": "profile.favourite_categories"},
        ),
        _rule("pin-hero", "pin", pin=["c0001", "c0002"], position=1, when={"segment": "first-visit"}),
        _rule("page-size", "limit", limit=48),
    ]
    for category in CATEGORIES:
        rules.append(
            _rule(
                f"more-{category}",
                "boost",
                weight=3,
                when={"segment": f"likes-{category}"},
                match=_leaf("product.category", "eq", category),
            )
        )
    for brand in BRANDS:
        rules.append(
            _rule(
                f"sale-{brand.lower()}",
                "boost",
                weight=2,
                when={"segment": f"fan-{brand.lower()}"},
                match={"all": [_leaf("product.brand", "eq", brand), _leaf("product.on_sale", "eq", True)]},
            )
        )
    for number, tag in enumerate(
        ("recycled", "organic", "vegan", "new", "bestseller", "slim", "relaxed", "waterproof", "basic")
    ):
        action = "bury" if number % 3 == 0 else "boost"
        rules.append(
            _rule(f"{action}-{tag}", action, weight=1 + number % 4, match=_leaf("product.tags", "contains", tag))
        )
    assert len(rules) == RULES, len(rules)
    slot = {
        "kind": "slot",
        "key": SLOT,
        "title": "Home hero",
        "purpose": PURPOSE,
        "default": "editorial",
        "variants": [
            {"key": "welcome", "when": {"segment": "first-visit"}},
            {"key": "win-back", "when": {"segment": "lapsed"}},
        ],
        "experiment": {"key": "bench-hero", "holdout_percent": 10, "arms": {"editorial": 1, "bold": 1}},
    }
    return [*segments, *rules, slot]


def _segment(key: str, when: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "segment", "key": key, "title": key, "purpose": PURPOSE, "when": when}


def _rule(key: str, action: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "rule", "key": key, "title": key, "purpose": PURPOSE, "action": action, **fields}


def candidates(rng: random.Random) -> list[dict[str, Any]]:
    tags = ("recycled", "organic", "vegan", "new", "bestseller", "slim", "relaxed", "waterproof", "limited")
    return [
        {
            "id": f"c{number:04d}",
            "brand": rng.choice(SHOP_BRANDS),
            "category": rng.choice(CATEGORIES),
            "department": rng.choice(("womens", "mens", "kids", "unisex")),
            "price": float(rng.randrange(199, 3999, 50)),
            "on_sale": rng.random() < 0.35,
            "tags": sorted(rng.sample(tags, rng.randrange(0, 3))),
        }
        for number in range(1, CANDIDATES + 1)
    ]


class _Decision(msgspec.Struct):
    subject_id: str
    purpose: str
    release_id: str
    segments: list[str]
    variants: dict[str, str]
    products: list[str]
    reasons: list[dict[str, str]]


def decision_check(subject_id: str) -> Callable[[httpx.Response], str | None]:
    def check(response: httpx.Response) -> str | None:
        problem = _status_problem(response, 200)
        if problem:
            return problem
        try:
            body = msgspec.json.decode(response.content, type=_Decision)
        except msgspec.DecodeError as exc:
            return f"unexpected body ({exc}): {response.text[:300]}"
        if body.subject_id != subject_id or len(body.release_id) != 36:
            return f"answer for {body.subject_id} / {body.release_id}, expected {subject_id}"
        if SLOT not in body.variants or not body.products or len(body.products) > 48:
            return f"no variant or products: {response.text[:300]}"
        if not body.segments or not body.reasons:
            return f"no segments or reasons: {response.text[:300]}"
        return None

    return check


@dataclass
class Context:
    args: argparse.Namespace
    running: RunningPlatform
    seeded: Seeded
    pids: dict[str, int]
    problems: Problems = field(default_factory=Problems)
    sample: dict[str, Any] = field(default_factory=dict)
    body_bytes: int = 0
    profile: dict[str, Any] = field(default_factory=dict)


def targets(context: Context) -> dict[str, list[Target]]:
    running, seeded = context.running, context.seeded
    released_keys = set(context.sample["fields"])
    withheld = [(w["field"], w["reason"]) for w in context.sample["withheld"]]
    auth = running.auth(CHANNEL)
    order = sorted(seeded.event_ids)
    random.Random(11).shuffle(order)
    rng = random.Random(13)
    bodies = [
        msgspec.json.encode(
            {
                "context": {
                    "page": "home",
                    "visit_count": rng.randrange(1, 30),
                    "days_since_last_visit": rng.randrange(0, 120),
                },
                "slots": [SLOT],
                "candidates": candidates(random.Random(number)),
            }
        )
        for number in range(context.args.candidate_lists)
    ]
    context.body_bytes = len(bodies[0])
    post_headers = {**auth, "content-type": "application/json"}
    query = f"?purpose={PURPOSE}"
    return {
        "decision": [
            Target(
                f"{running.gateway}/v1/subjects/{s}/decisions{query}",
                decision_check(s),
                post_headers,
                method="POST",
                body=bodies[number % len(bodies)],
            )
            for number, s in enumerate(order)
        ],
        "release": [
            Target(
                f"{running.gateway}/v1/subjects/{s}/profile{query}",
                release_check(s, {k: v for k, v in seeded.fields[s].items() if k in released_keys}, withheld),
                auth,
            )
            for s in order
        ],
    }


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

        measured = await alternate_rounds(
            loads,
            rounds=args.rounds,
            seconds=args.seconds,
            warmup=args.warmup,
            server_pids=pids_of,
            record=context.problems.add_result,
            log=log,
        )
        if args.profile:
            context.profile = await profile_workers(context, by_side, client)
        return measured


def _worker(pid: int) -> int:
    """The busiest process under ``pid`` (granian's worker), else ``pid`` itself."""
    workers = _descendants(pid) or {pid: 0}
    return max(workers, key=lambda child: workers[child])


async def profile_workers(context: Context, by_side: Mapping[str, Sequence[Target]], client: Any) -> dict[str, Any]:
    """py-spy on the gateway's and the rules service's workers under load (not used for ratios)."""
    executable = _py_spy()
    if executable is None:
        log("py-spy is not installed; no profile (pip install py-spy)")
        return {}
    directory = Path(context.args.profile)
    summaries: dict[str, Any] = {"directory": str(directory)}
    for side, services in (("decision", ("gateway", "rules")), ("release", ("gateway",))):
        spies = {}
        for service in services:
            output = directory / f"{side}-{service}.txt"
            log(f"profiling      {side:<8} {service:<8} py-spy -> {output}")
            spies[service] = PySpy(executable, _worker(context.pids[service]), output)
        await asyncio.sleep(1.0)  # attached before the load starts
        try:
            result = await run_load(
                client, by_side[side], concurrency=context.args.concurrency, seconds=context.args.profile_seconds
            )
            context.problems.add_result(f"profile {side}", result)
        finally:
            for spy in spies.values():
                spy.stop()
        for service, spy in spies.items():
            summaries[f"{side} {service}"] = summarize_profile(spy.output)
    return summaries


def build_report(
    measured: Mapping[str, list[LoadResult]], context: Context, machine: dict[str, Any], command: str
) -> dict[str, Any]:
    args = context.args
    results: dict[str, Any] = {}
    baseline = measured[BASELINE]
    for side in SIDES:
        rounds = measured[side]
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
            "ratio_to_release": _ratio(merged.throughput, merge(baseline).throughput),
            "round_ratios_to_release": [
                _ratio(one.throughput, other.throughput) for one, other in zip(rounds, baseline, strict=True)
            ],
        }
    decision = results["decision"]
    verdicts = [
        {
            "scenario": "decision",
            "metric": "throughput / release",
            "target": f">= {TARGETS['decision']['throughput_ratio']:g}",
            "value": decision["ratio_to_release"],
            "verdict": _verdict(decision["ratio_to_release"], TARGETS["decision"]["throughput_ratio"], True),
        },
        {
            "scenario": "decision",
            "metric": "p99 ms",
            "target": f"<= {TARGETS['decision']['p99_ms']:g}",
            "value": decision["p99_ms"],
            "verdict": _verdict(decision["p99_ms"], TARGETS["decision"]["p99_ms"], False),
        },
    ]
    return {
        "benchmark": "decisions",
        "command": command,
        "machine": machine,
        "settings": {
            "backend": "postgres",
            "server": "granian, 1 worker per process",
            "seconds": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "concurrency": args.concurrency,
            "shoppers": args.shoppers,
            "segments": SEGMENTS,
            "rules": RULES,
            "candidates": CANDIDATES,
            "request_bytes": context.body_bytes,
            "candidate_lists": context.args.candidate_lists,
            "purpose": PURPOSE,
        },
        "results": results,
        "targets": verdicts,
        **({"profile": context.profile} if context.profile else {}),
        "errors": {
            "total": context.problems.total,
            "by_phase": context.problems.counts,
            "examples": context.problems.examples,
        },
    }


def print_report(report: dict[str, Any]) -> None:
    settings = report["settings"]
    print_machine(report, "a decision through the gateway vs the single profile release (same run)")
    print(
        f"settings: {settings['rounds']} rounds x {settings['seconds']:g}s per side, alternating; warm-up "
        f"{settings['warmup_seconds']:g}s; concurrency {settings['concurrency']}; {settings['shoppers']} shoppers; "
        f"{settings['segments']} segments, {settings['rules']} rules, {settings['candidates']} candidates "
        f"({settings['request_bytes']} bytes per request, {settings['candidate_lists']} different lists in turn); "
        f"{settings['server']}"
    )
    print()
    header = (
        f"{'side':<10}{'req/s':>7}  {'per round':<24}{'/release':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}  CPU ms/req"
    )
    print(header)
    print("-" * len(header))
    for side, row in report["results"].items():
        rounds = " ".join(f"{value:.0f}" for value in row["round_throughputs_rps"])
        cpu = " ".join(f"{name} {ms:.2f}" for name, ms in row["cpu_ms_per_request"].items())
        ratio = "-" if row["ratio_to_release"] is None else f"{row['ratio_to_release']:.2f}"
        print(
            f"{side:<10}{row['throughput_rps']:>7.0f}  {rounds:<24}{ratio:>9}"
            f"{row['p50_ms']:>8.1f}{row['p99_ms']:>8.1f}{row['max_ms']:>8.1f}  {cpu}"
        )
    print()
    print_targets(report, scenario_width=10)
    if report.get("profile"):
        print()
        print_profile(report["profile"])
    print_errors(report)


def print_profile(profile: Mapping[str, Any]) -> None:
    print(f"py-spy profiles of the workers (stacks in {profile['directory']})")
    for name, summary in profile.items():
        if not isinstance(summary, dict) or not summary.get("samples"):
            continue
        print(f"  {name}: {summary['samples']} samples")
        for title, key, count in (
            ("self by package", "self_by_package_pct", 10),
            ("inclusive by function", "inclusive_by_function_pct", 25),
        ):
            parts = [(part, pct) for part, pct in summary[key].items() if part not in _PLUMBING][:count]
            print(f"    {title}:")
            for part, pct in parts:
                print(f"      {pct:5.1f}%  {part}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.decisions", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one measured load round (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="load rounds per side (default 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per side (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--shoppers", type=int, default=2_000, help="shoppers seeded (default 2000)")
    parser.add_argument(
        "--candidate-lists",
        type=int,
        default=8,
        help="different candidate lists sent in turn (default 8, like a few listing pages; the rules "
        "service keeps tables of lists it sees again, so many lists measure its slow path)",
    )
    parser.add_argument("--profile", metavar="DIR", help="afterwards, py-spy the gateway and rules; stacks to DIR")
    parser.add_argument("--profile-seconds", type=float, default=5.0, help="load per profiled side (default 5)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.profile_seconds <= 0:
        parser.error("--seconds and --profile-seconds must be > 0, --warmup >= 0")
    if min(args.rounds, args.concurrency, args.shoppers, args.candidate_lists) < 1:
        parser.error("--rounds, --concurrency, --shoppers and --candidate-lists must be >= 1")
    return args


def define_all(running: RunningPlatform) -> None:
    headers = running.service_headers("rules")
    with httpx.Client(timeout=10.0) as client:
        for body in definitions():
            response = client.post(f"{running.url('rules')}/v1/definitions", json=body, headers=headers)
            if response.status_code != 201:
                raise RuntimeError(f"definition {body['key']} refused: {response.text}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every answer was the expected one (targets met or not), 1 otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if not postgres_available():
        log("PostgreSQL does not answer on 127.0.0.1:5432")
        return 1
    machine = machine_info(("granian", "litestar", "sqlalchemy", "asyncpg", "msgspec", "uvloop", "aiohttp"))
    problems = Problems()
    try:
        with tempfile.TemporaryDirectory(prefix="tillit-bench-decisions-") as tmp, ExitStack() as stack:
            log("starting the platform (postgres, granian, no demo definitions)")
            running = stack.enter_context(
                running_platform(
                    "postgres",
                    Path(tmp) / "platform",
                    {
                        "TILLIT_SERVER": "granian",
                        "TILLIT_ACCESS_TOKEN_TTL": "3600",
                        **SHIPPED_POLLING,
                        "TILLIT_RULES_DEFINITIONS_DIR": "",
                    },
                )
            )
            running.add_channel(CHANNEL, ["profiles:read", "decisions:read"])
            log(f"defining {SEGMENTS} segments, {RULES} rules and a slot")
            define_all(running)
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
            pids = {
                name: running.platform.processes[name].pid for name in ("gateway", "consent", "preferences", "rules")
            }
            postmaster = run(_postmaster())
            if postmaster is not None:
                pids["postgres"] = postmaster
            context = Context(args, running, seeded, pids, problems, answer.json())
            measured = run(measure(context))
            log("stopping")
    except (PlatformError, OSError, asyncpg.PostgresError, httpx.HTTPError, RuntimeError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        return 1
    report = build_report(measured, context, machine, command_line("bench.decisions", argv))
    return emit_report(report, args.json, print_report, problems.total)


if __name__ == "__main__":
    raise SystemExit(main())
