"""Per-client rate limits: a token bucket per OAuth client, sized by its channel's ``rate_limit``.

The buckets live in the memory of one gateway process: with several replicas each enforces the
limit on its own share of the traffic (``TILLIT_RATE_LIMIT_SCALE`` scales every limit, e.g. 0.5
for two replicas behind a balancer). A bucket holds ``requests`` tokens and refills at
``requests / per_seconds`` per second, so a client may burst up to its limit and then keeps to
the rate. A policy reload that changes a channel's limit starts its clients on a fresh bucket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from litestar.datastructures import State

from gateway.oauth import Caller
from tillit.policy import RateLimit
from tillit.problems import TooManyRequests

__all__ = ["RateLimiter", "TokenBucket", "enforce_rate_limit"]


class TokenBucket:
    def __init__(self, capacity: float, refill_per_second: float, now: float) -> None:
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.tokens = capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token: 0 when there was one, else the seconds until there will be one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill_per_second)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.refill_per_second


class RateLimiter:
    """The buckets of one gateway process, keyed by OAuth client id."""

    def __init__(self, scale: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.scale = scale
        self.clock = clock
        self._buckets: dict[str, tuple[RateLimit, TokenBucket]] = {}

    def check(self, client_id: str, limit: RateLimit | None) -> None:
        """Count one request of ``client_id``; raise 429 with ``Retry-After`` when over ``limit``."""
        if limit is None:
            return
        now = self.clock()
        held = self._buckets.get(client_id)
        if held is None or held[0] != limit:
            capacity = max(1.0, limit.requests * self.scale)
            held = (limit, TokenBucket(capacity, limit.per_second * self.scale, now))
            self._buckets[client_id] = held
        wait = held[1].take(now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"client {client_id!r} is over its channel's rate limit of {limit.requests} requests per "
                f"{limit.per_seconds} s; retry in {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )


def enforce_rate_limit(state: State, caller: Caller) -> None:
    """Count the request against the caller's channel's limit in the policy in force now."""
    limiter: RateLimiter = state.rate_limiter
    channel = state.policy.channels.get(caller.channel)
    limiter.check(caller.client_id, channel.rate if channel is not None else None)
