"""Zero stale releases across gateway replicas (DESIGN: "on any gateway replica").

Two gateway processes run on one set of services and one gateway database, as two replicas behind
a load balancer would (same public URL as token issuer, same keys). Pairs are driven concurrently
(up to ``TILLIT_REPLICA_PAIRS``, 2,000, within ``TILLIT_REPLICA_SECONDS``, 25 s, per backend; at
least 200 must fit): consent given through one replica, the profile read through the *other* replica
(which would prime any per-replica cache with the "given" state), the consent withdrawn through
the first replica and acknowledged, then the profile read again through the second replica. That
read started after the withdrawal was acknowledged, so it must withhold everything. The roles of
the two replicas swap every round, and racing readers hit both replicas at random meanwhile.

Today the gateway caches nothing, so this passes. It is here to keep any future cache honest: a
per-replica cache of consent state (with a TTL, or invalidated only on writes that pass through
the same replica) would answer the read after the withdrawal from the entry the priming read put
there moments before, and release data — the assertion on ``after_withdrawal`` would fail within
the first few rounds, since every round primes and then reads through the replica that did *not*
see the withdrawal, well inside any TTL. Only a cache invalidated across replicas before the
withdrawal is acknowledged (or none) passes.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.platform import RunningPlatform, free_port

pytestmark = pytest.mark.slow

PROFILED = "personalize.content.profiled"
PAIRS = int(os.environ.get("TILLIT_REPLICA_PAIRS", "2000"))
SECONDS = float(os.environ.get("TILLIT_REPLICA_SECONDS", "25"))
"""Time budget per backend: on a loaded CI machine fewer than PAIRS pairs may fit; MIN_PAIRS must."""
MIN_PAIRS = 200
SUBJECTS = 48
WORKERS = 16
RACERS = 4


@pytest.fixture
def second_gateway(stack: RunningPlatform) -> Iterator[str]:
    """Another gateway process beside ``stack``'s: same env, own port, same public URL (issuer)."""
    port = free_port()
    env = {**stack.env, "TILLIT_GATEWAY_PORT": str(port), "TILLIT_GATEWAY_URL": stack.gateway}
    log = (stack.data_dir / "logs" / f"gateway-{port}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "tillit", "serve", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"second gateway exited with {process.returncode}"
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "second gateway not ready after 60 s"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@dataclass
class Timeline:
    """What happened to one subject's consent, in order: [kind, sent, acknowledged]."""

    events: list[list[Any]] = field(default_factory=list)

    def stale(self, started: float, ended: float) -> bool:
        """Whether releasing data in a read over [started, ended] would break the promise: a withdrawal
        was acknowledged before the read started and no give was even sent before it ended."""
        last_withdrawal = None
        for index, (kind, _sent, acked) in enumerate(self.events):
            if kind == "withdraw" and acked < started:
                last_withdrawal = index
        if last_withdrawal is None:
            return False
        return not any(kind == "give" and sent < ended for kind, sent, _acked in self.events[last_withdrawal + 1 :])


@dataclass
class Outcome:
    after_withdrawal: int = 0
    stale: list[str] = field(default_factory=list)
    raced: int = 0


async def _consent(client: httpx.AsyncClient, gateway: str, subject: str, action: str, auth: dict[str, str]) -> None:
    response = await client.post(
        f"{gateway}/v1/subjects/{subject}/consents", json={"purpose": PROFILED, "action": action}, headers=auth
    )
    assert response.status_code == 201, response.text


async def _released(client: httpx.AsyncClient, gateway: str, subject: str, auth: dict[str, str]) -> bool:
    response = await client.get(f"{gateway}/v1/subjects/{subject}/profile", params={"purpose": PROFILED}, headers=auth)
    assert response.status_code == 200, response.text
    return bool(response.json()["fields"])


async def _drive(gateways: tuple[str, str], subjects: list[str], auth: dict[str, str]) -> Outcome:
    outcome = Outcome()
    timelines = {subject: Timeline() for subject in subjects}
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=WORKERS + RACERS)

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        deadline = time.monotonic() + SECONDS

        async def worker(own: list[str], rounds: int) -> None:
            for number in range(rounds):
                if time.monotonic() > deadline:
                    return
                subject = own[number % len(own)]
                writer, reader = gateways if number % 2 == 0 else gateways[::-1]
                timeline = timelines[subject]
                # A give counts from the moment it is sent (a racing read may already see it).
                give = ["give", time.monotonic(), float("inf")]
                timeline.events.append(give)
                await _consent(client, writer, subject, "give", auth)
                give[2] = time.monotonic()
                await _released(client, reader, subject, auth)  # primes whatever the reader might cache
                # A withdrawal counts from its acknowledgement.
                sent = time.monotonic()
                await _consent(client, writer, subject, "withdraw", auth)
                timeline.events.append(["withdraw", sent, time.monotonic()])
                if await _released(client, reader, subject, auth):
                    outcome.stale.append(f"{subject}: released by {reader} after a withdrawal acknowledged by {writer}")
                outcome.after_withdrawal += 1

        async def racer(seed: int) -> None:
            chance = random.Random(seed)  # noqa: S311 - picking test traffic, not secrets
            while not done.is_set():
                subject = chance.choice(subjects)
                started = time.monotonic()
                released = await _released(client, chance.choice(gateways), subject, auth)
                if released and timelines[subject].stale(started, time.monotonic()):
                    outcome.stale.append(f"{subject}: a racing read released after an acknowledged withdrawal")
                outcome.raced += 1

        racers = [asyncio.create_task(racer(seed)) for seed in range(RACERS)]
        shares = [subjects[index::WORKERS] for index in range(WORKERS)]
        rounds = [PAIRS // WORKERS + (1 if index < PAIRS % WORKERS else 0) for index in range(WORKERS)]
        try:
            await asyncio.gather(*(worker(share, count) for share, count in zip(shares, rounds, strict=True)))
        finally:
            done.set()
            await asyncio.gather(*racers)
    return outcome


def test_no_read_after_an_acknowledged_withdrawal_releases_on_either_replica(
    stack: RunningPlatform, second_gateway: str
) -> None:
    subjects = [
        stack.new_shopper({"favourite_categories": ["dresses"], "shoe_size": 38, "email": "r@example.com"})
        for _ in range(SUBJECTS)
    ]
    auth = stack.auth("web")  # one token for both replicas: same issuer, same keys
    started = time.monotonic()
    outcome = asyncio.run(_drive((stack.gateway, second_gateway), subjects, auth))
    elapsed = time.monotonic() - started
    assert outcome.stale == [], f"{len(outcome.stale)} stale releases, first: {outcome.stale[:5]}"
    assert outcome.after_withdrawal >= min(MIN_PAIRS, PAIRS)
    assert outcome.raced > 0
    pairs, raced = outcome.after_withdrawal, outcome.raced
    print(f"{pairs} withdraw/read pairs and {raced} racing reads over two gateways in {elapsed:.1f}s")
