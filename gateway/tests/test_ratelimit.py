"""Per-client token buckets, on an injected clock: a burst up to the limit, then the rate."""

from __future__ import annotations

import pytest

from gateway.ratelimit import RateLimiter, TokenBucket
from tillit.policy import RateLimit
from tillit.problems import TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_a_burst_up_to_its_capacity_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(capacity=3, refill_per_second=0.5, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(2.0)
    assert bucket.take(1.0) == pytest.approx(1.0)
    assert bucket.take(2.0) == 0.0
    assert bucket.take(100.0) == 0.0
    assert bucket.tokens == pytest.approx(2.0), "refilling stops at the capacity"


def test_over_the_limit_a_client_gets_429_with_retry_after_in_whole_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    limit = RateLimit(requests=2, per_seconds=10)
    limiter.check("c1", limit)
    limiter.check("c1", limit)
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("c1", limit)
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "5"}
    assert "2 requests per 10 s" in refused.value.detail
    clock.now += 4.9
    with pytest.raises(TooManyRequests) as soon:
        limiter.check("c1", limit)
    assert soon.value.headers == {"Retry-After": "1"}, "never less than one second"
    clock.now += 0.2
    limiter.check("c1", limit)


def test_clients_have_their_own_buckets_and_no_limit_means_none() -> None:
    limiter = RateLimiter(clock=Clock())
    limit = RateLimit(requests=1, per_seconds=1)
    limiter.check("c1", limit)
    limiter.check("c2", limit)
    with pytest.raises(TooManyRequests):
        limiter.check("c1", limit)
    for _ in range(1000):
        limiter.check("c3", None)


def test_a_changed_limit_starts_a_fresh_bucket_and_the_scale_multiplies_every_limit() -> None:
    limiter = RateLimiter(clock=Clock())
    limiter.check("c1", RateLimit(1, 60))
    with pytest.raises(TooManyRequests):
        limiter.check("c1", RateLimit(1, 60))
    limiter.check("c1", RateLimit(2, 60))
    scaled = RateLimiter(scale=10, clock=Clock())
    for _ in range(10):
        scaled.check("c1", RateLimit(1, 60))
    with pytest.raises(TooManyRequests) as refused:
        scaled.check("c1", RateLimit(1, 60))
    assert refused.value.headers == {"Retry-After": "6"}
