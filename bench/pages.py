"""The preference center's pages: server time per page and page weight, against the gateway calls they make.

Run from the repository root::

    .venv/bin/python -m bench.pages [--json] [--backend sqlite|postgres] [--requests 200] [--concurrency 4]

(about a minute with the defaults).

The whole platform runs as real processes (granian, one worker each). ``--shoppers`` shoppers are
seeded into the services, each opens a session through a real preference link, and one quiz session
is started per shopper. Then, in alternating rounds, every page is loaded ``--requests`` times over
the shoppers' own cookies, ``--concurrency`` at a time:

``page``
    ``GET`` of the page on the preference center. Its server time is the ``Server-Timing: app;dur=``
    the preference center sets (everything it does for the page, the gateway calls included).
    ``own`` is that time minus the part spent waiting on the gateway (``Server-Timing: gateway;dur=``).
``gateway``
    The baseline: the same gateway calls the page makes (concurrently where the page does), timed by
    this client with the same shopper tokens. ``page / gateway`` is what rendering, the sealed cookie,
    CSRF and headers add on top of the data the page needs.

Page weight is what a first visit downloads for the page: its HTML plus every stylesheet and script
it references, uncompressed (the target's measure) and as transferred (static files are served gzipped;
pages are not, as they hold a CSRF token). Targets: server time per
page p95 <= 50 ms and page weight <= 100 KB; they print PASS or MISS (a miss does not fail the run);
a wrong answer does (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from bench._load import SHIPPED_POLLING, machine_info, percentile
from bench._report import command_line, emit_report, print_machine
from preference_center.assets import ensure_assets
from tests.platform import RunningPlatform, postgres_available, running_platform

TARGET_P95_MS: Final = 50.0
TARGET_WEIGHT_KB: Final = 100.0
EMAIL: Final = "marketing.communications.email"
PAGES: Final = ("/", "/quiz", "/quiz/{quiz}", "/preferences", "/consents", "/data", "/delete")
TIMING: Final = re.compile(r"(\w+);dur=([0-9.]+)")
ASSET: Final = re.compile(r'<(?:script[^>]*\ssrc|link[^>]*\shref)="(/static/[^"]+)"')


@dataclass
class Shopper:
    subject_id: str
    client: httpx.AsyncClient
    token: str
    quiz: str


@dataclass
class Side:
    """Timings of one page or its baseline, in milliseconds."""

    server: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    client: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "requests": len(self.client),
            "server_p50_ms": percentile(self.server, 0.5) if self.server else float("nan"),
            "server_p95_ms": percentile(self.server, 0.95) if self.server else float("nan"),
            "own_p50_ms": percentile(self.own, 0.5) if self.own else float("nan"),
            "own_p95_ms": percentile(self.own, 0.95) if self.own else float("nan"),
            "client_p50_ms": percentile(self.client, 0.5),
            "client_p95_ms": percentile(self.client, 0.95),
        }


def _profile(number: int) -> dict[str, Any]:
    return {
        "email": f"bench{number}@example.com",
        "first_name": f"Bench{number}",
        "preferred_language": ("en", "sv", "nb", "et")[number % 4],
        "sizes": {"tops": "M", "bottoms": 32, "shoes": 41.5},
        "favourite_categories": ["jeans", "knitwear"],
        "favourite_brands": ["Filippa K", "Acne Studios"],
        "topics": ["new-arrivals"],
        "price_range": {"min": 300, "max": 2500, "currency": "SEK"},
        "contact_frequency": {"email": "weekly"},
    }


async def open_shoppers(running: RunningPlatform, count: int) -> list[Shopper]:
    shoppers = []
    gateway = httpx.AsyncClient(base_url=running.gateway, timeout=30)
    for number in range(count):
        subject = running.new_shopper(
            _profile(number), consents=((EMAIL, "give"), (EMAIL, "withdraw"), (EMAIL, "give"))
        )
        link = await gateway.post(f"/v1/subjects/{subject}/preference-link", json={}, headers=running.auth("email"))
        url = str(link.json()["url"])
        client = httpx.AsyncClient(base_url=running.url("preference_center"), timeout=30)
        opened = await client.get(url.replace(running.url("preference_center"), ""))
        if opened.status_code != 303:
            raise RuntimeError(f"the link did not open a session: {opened.status_code} {opened.text[:300]}")
        session = await gateway.post("/v1/shopper/sessions", json={"link_token": url.rsplit("/link/", 1)[1]})
        token = str(session.json()["access_token"])
        quiz = await gateway.post(
            "/v1/me/quiz-sessions",
            json={"quiz_id": "style", "locale": "en"},
            headers={"authorization": f"Bearer {token}"},
        )
        shoppers.append(Shopper(subject, client, token, str(quiz.json()["id"])))
    await gateway.aclose()
    return shoppers


def gateway_calls(page: str, shopper: Shopper, lang: str = "en") -> list[tuple[str, dict[str, str]]]:
    """The gateway reads the preference center makes for ``page`` (run concurrently, as it does)."""
    me = {
        "/": ["/v1/me/profile", f"/v1/me/consents?lang={lang}"],
        "/quiz": ["/v1/quizzes", "/v1/me/quiz-sessions"],
        "/quiz/{quiz}": [f"/v1/me/quiz-sessions/{shopper.quiz}"],
        "/preferences": ["/v1/me/profile"],
        "/consents": [f"/v1/me/consents?lang={lang}", "/v1/me/consents/history"],
        "/data": ["/v1/me/profile", "/v1/me/requests"],
        "/delete": ["/v1/me/requests"],
    }[page]
    return [(path, {"authorization": f"Bearer {shopper.token}"}) for path in me]


async def load(
    shoppers: Sequence[Shopper], requests: int, concurrency: int, one: Callable[[Shopper], Awaitable[None]]
) -> None:
    queue = [shoppers[index % len(shoppers)] for index in range(requests)]

    async def worker() -> None:
        while queue:
            await one(queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(
    running: RunningPlatform, shoppers: list[Shopper], requests: int, concurrency: int, rounds: int
) -> dict[str, dict[str, Side]]:
    sides: dict[str, dict[str, Side]] = {page: {"page": Side(), "gateway": Side()} for page in PAGES}
    gateway = httpx.AsyncClient(base_url=running.gateway, timeout=30, limits=httpx.Limits(max_keepalive_connections=64))
    problems: list[str] = []

    def page_call(page: str, side: Side) -> Callable[[Shopper], Awaitable[None]]:
        async def one(shopper: Shopper) -> None:
            started = time.perf_counter()
            response = await shopper.client.get(page.format(quiz=shopper.quiz))
            side.client.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or "<main" not in response.text:
                problems.append(f"{page}: {response.status_code} {response.text[:200]}")
                return
            timing = dict(TIMING.findall(response.headers.get("server-timing", "")))
            if "app" in timing:
                side.server.append(float(timing["app"]))
                side.own.append(float(timing["app"]) - float(timing.get("gateway", 0.0)))

        return one

    def gateway_call(page: str, side: Side) -> Callable[[Shopper], Awaitable[None]]:
        async def one(shopper: Shopper) -> None:
            started = time.perf_counter()
            answers = await asyncio.gather(
                *(gateway.get(path, headers=headers) for path, headers in gateway_calls(page, shopper))
            )
            side.client.append((time.perf_counter() - started) * 1000)
            problems.extend(
                f"gateway for {page}: {answer.status_code}" for answer in answers if answer.status_code != 200
            )

        return one

    for page in PAGES:  # warm-up: connections, caches, the first render of each template
        await load(shoppers, len(shoppers), concurrency, page_call(page, Side()))
        await load(shoppers, len(shoppers), concurrency, gateway_call(page, Side()))
    per_round = max(1, requests // rounds)
    for _ in range(rounds):
        for page in PAGES:
            await load(shoppers, per_round, concurrency, page_call(page, sides[page]["page"]))
            await load(shoppers, per_round, concurrency, gateway_call(page, sides[page]["gateway"]))
    await gateway.aclose()
    if problems:
        raise RuntimeError("wrong answers: " + "; ".join(problems[:5]))
    return sides


async def weights(shopper: Shopper) -> dict[str, dict[str, int]]:
    """Bytes of each page's HTML and of the static files it references (a first visit's download)."""
    result = {}
    sizes: dict[str, int] = {}
    wire: dict[str, int] = {}
    for page in PAGES:
        response = await shopper.client.get(page.format(quiz=shopper.quiz), headers={"accept-encoding": "gzip"})
        assets = ASSET.findall(response.text)
        for asset in assets:
            if asset not in sizes:
                answer = await shopper.client.get(asset, headers={"accept-encoding": "gzip"})
                sizes[asset], wire[asset] = len(answer.content), answer.num_bytes_downloaded
        css = sum(sizes[asset] for asset in assets if asset.split("?")[0].endswith(".css"))
        js = sum(sizes[asset] for asset in assets if asset.split("?")[0].endswith(".js"))
        result[page] = {
            "html": len(response.content),
            "css": css,
            "js": js,
            "total": len(response.content) + css + js,
            "transferred": response.num_bytes_downloaded + sum(wire[asset] for asset in assets),
        }
    return result


async def _measure_all(
    running: RunningPlatform, args: argparse.Namespace
) -> tuple[dict[str, dict[str, Side]], dict[str, dict[str, int]]]:
    shoppers = await open_shoppers(running, args.shoppers)
    try:
        sides = await measure(running, shoppers, args.requests, args.concurrency, args.rounds)
        return sides, await weights(shoppers[0])
    finally:
        for shopper in shoppers:
            await shopper.client.aclose()


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    ensure_assets()
    with (
        tempfile.TemporaryDirectory(prefix="bench-pages-") as directory,
        running_platform(args.backend, Path(directory), SHIPPED_POLLING) as running,
    ):
        running.add_channel("email", ["profiles:read", "consents:write"])
        sides, weight = asyncio.run(_measure_all(running, args))
    pages = {}
    for page in PAGES:
        own, base = sides[page]["page"].summary(), sides[page]["gateway"].summary()
        pages[page] = {
            "page": own,
            "gateway": base,
            "ratio_p95": own["server_p95_ms"] / base["client_p95_ms"] if base["client_p95_ms"] else None,
            "weight": weight[page],
        }
    worst = max(entry["page"]["server_p95_ms"] for entry in pages.values())
    worst_own = max(entry["page"]["own_p95_ms"] for entry in pages.values())
    heaviest = max(entry["weight"]["total"] for entry in pages.values()) / 1024
    return {
        "command": command_line("bench.pages", sys.argv[1:]),
        "machine": machine_info(["litestar", "jinja2", "babel", "granian", "httpx"]),
        "backend": args.backend,
        "requests_per_page": args.requests,
        "concurrency": args.concurrency,
        "pages": pages,
        "targets": {
            "server_p95_ms": {"target": TARGET_P95_MS, "worst": worst, "pass": worst <= TARGET_P95_MS},
            "own_p95_ms": {"target": TARGET_P95_MS, "worst": worst_own, "pass": worst_own <= TARGET_P95_MS},
            "page_weight_kb": {"target": TARGET_WEIGHT_KB, "heaviest": heaviest, "pass": heaviest <= TARGET_WEIGHT_KB},
        },
    }


def print_report(report: dict[str, Any]) -> None:
    print_machine(report, "bench.pages: the preference center's pages")
    print(f"backend {report['backend']}, {report['requests_per_page']} requests per page and side,", end=" ")
    print(f"concurrency {report['concurrency']}\n")
    header = (
        f"{'page':<14} {'server p50':>10} {'server p95':>10} {'own p95':>9} {'client p95':>10} {'gateway p95':>11}"
        f" {'page/gw':>8} {'HTML KB':>8} {'total KB':>9} {'gzip KB':>8}"
    )
    print(header)
    print("-" * len(header))
    for page, entry in report["pages"].items():
        own, base, weight = entry["page"], entry["gateway"], entry["weight"]
        ratio = entry["ratio_p95"]
        print(
            f"{page:<14} {own['server_p50_ms']:>8.1f}ms {own['server_p95_ms']:>8.1f}ms {own['own_p95_ms']:>7.1f}ms"
            f" {own['client_p95_ms']:>8.1f}ms"
            f" {base['client_p95_ms']:>9.1f}ms {(f'{ratio:.2f}x' if ratio else '-'):>8}"
            f" {weight['html'] / 1024:>8.1f} {weight['total'] / 1024:>9.1f} {weight['transferred'] / 1024:>8.1f}"
        )
    print()
    for name, target in report["targets"].items():
        value = target.get("worst", target.get("heaviest"))
        verdict = "PASS" if target["pass"] else "MISS"
        print(
            f"{verdict}  {name}: {value:.1f} (target <= {target['target']:.0f}, ratio {value / target['target']:.2f})"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--requests", type=int, default=200, help="requests per page and side (default 200)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--shoppers", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "postgres" and not postgres_available():
        print("bench.pages: PostgreSQL does not answer on 127.0.0.1:5432", file=sys.stderr)
        return 2
    try:
        report = run_bench(args)
    except RuntimeError as exc:
        print(f"bench.pages: {exc}", file=sys.stderr)
        return 1
    return emit_report(report, args.json, print_report)


if __name__ == "__main__":
    sys.exit(main())
