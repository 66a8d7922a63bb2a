"""Shopper tokens, lapsed preference links, per-subject limits and forwarded evidence, without a server."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.shopper.api import _truncated_ip
from gateway.shopper.service import LINK_REQUEST_GRACE, ShopperLimits
from gateway.shopper.tokens import ShopperTokens
from tillit.keys import ACCESS_TOKEN_KEY, LINK_KEY, ensure_signing_key, load_private_key, load_public_keys
from tillit.links import LinkError, sign_preference_link, verify_lapsed_preference_link
from tillit.problems import TooManyRequests, Unauthorized

ISSUER = "http://gateway.test"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[ECKey, KeySet]:
    ensure_signing_key(tmp_path, ACCESS_TOKEN_KEY)
    return load_private_key(tmp_path, ACCESS_TOKEN_KEY), load_public_keys(tmp_path, ACCESS_TOKEN_KEY)


@pytest.fixture
def tokens(keys: tuple[ECKey, KeySet]) -> ShopperTokens:
    return ShopperTokens(keys[0], keys[1], issuer=ISSUER, ttl=1800)


def test_a_shopper_token_names_its_subject_and_expires(tokens: ShopperTokens) -> None:
    now = datetime.now(UTC)
    token, expires_at = tokens.issue("shopper-a", "link-1", now)
    shopper = tokens.verify(f"Bearer {token}")
    assert (shopper.subject_id, shopper.link_id, shopper.expires_at) == ("shopper-a", "link-1", expires_at)
    assert timedelta(seconds=1799) <= expires_at - now <= timedelta(seconds=1800)
    stale, _ = tokens.issue("shopper-a", "link-1", now - timedelta(hours=1))
    with pytest.raises(Unauthorized, match="not valid"):
        tokens.verify(f"Bearer {stale}")


def test_a_verified_token_is_checked_once_and_counts_only_until_it_expires(
    tokens: ShopperTokens, keys: tuple[ECKey, KeySet], monkeypatch: pytest.MonkeyPatch
) -> None:
    token, _ = tokens.issue("shopper-a", "link-1", datetime.now(UTC))
    first = tokens.verify(f"Bearer {token}")
    decoded: list[str] = []
    real_decode = jwt.decode
    monkeypatch.setattr(jwt, "decode", lambda *args, **kwargs: decoded.append("x") or real_decode(*args, **kwargs))
    assert tokens.verify(f"Bearer {token}") == first
    assert decoded == [], "the second call of a session is not verified again"
    # A token kept past its expiry (plus the leeway) is refused even though it was verified before.
    key = keys[0]
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": ISSUER, "aud": "tillit-shopper", "sub": "s", "scope": "shopper", "link_id": "l"}
    short = jwt.encode(
        {"alg": "ES256", "kid": key.kid, "typ": "shopper+jwt"}, {**claims, "iat": now, "exp": now + 1}, key
    )
    assert tokens.verify(f"Bearer {short}").subject_id == "s"
    monkeypatch.setattr(time, "time", lambda: now + 60.0)  # the clock of the cache and of joserfc
    with pytest.raises(Unauthorized):
        tokens.verify(f"Bearer {short}")
    assert decoded == ["x", "x"], "an expired entry is verified afresh (and refused)"


def test_only_shopper_tokens_pass(tokens: ShopperTokens, keys: tuple[ECKey, KeySet]) -> None:
    key = keys[0]
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": ISSUER, "aud": "tillit-shopper", "sub": "s", "scope": "shopper", "link_id": "l"}
    claims |= {"iat": now, "exp": now + 60}

    def signed(typ: str, **changes: object) -> str:
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": typ}, {**claims, **changes}, key)

    assert tokens.verify(f"Bearer {signed('shopper+jwt')}").subject_id == "s"
    forged = signed("shopper+jwt")
    for authorization in (
        None,
        "Basic abc",
        "Bearer ",
        f"Bearer {signed('at+jwt')}",  # a channel access token's type
        f"Bearer {signed('shopper+jwt', aud='tillit-gateway')}",  # a channel access token's audience
        f"Bearer {signed('shopper+jwt', scope='profiles:read')}",
        f"Bearer {signed('shopper+jwt', iss='http://elsewhere')}",
        f"Bearer {signed('shopper+jwt', sub=7)}",
        f"Bearer {forged[:-4]}{'AAAA' if forged[-4:] != 'AAAA' else 'BBBB'}",
        "Bearer " + "a" * 3000,
    ):
        with pytest.raises(Unauthorized):
            tokens.verify(authorization)


def test_a_lapsed_link_may_ask_for_a_new_one_within_the_grace(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path, LINK_KEY)
    private, public = load_private_key(tmp_path, LINK_KEY), load_public_keys(tmp_path, LINK_KEY)
    issued = datetime(2026, 1, 1, tzinfo=UTC)
    token, expires_at = sign_preference_link(
        private, issuer=ISSUER, subject_id="s", client_id="c", now=issued, lifetime=timedelta(days=7)
    )

    def lapsed(now: datetime) -> str:
        return verify_lapsed_preference_link(token, public, issuer=ISSUER, now=now, grace=LINK_REQUEST_GRACE).subject_id

    assert lapsed(issued + timedelta(days=1)) == "s"
    assert lapsed(expires_at + LINK_REQUEST_GRACE - timedelta(minutes=1)) == "s"
    with pytest.raises(LinkError) as too_old:
        lapsed(expires_at + LINK_REQUEST_GRACE + timedelta(minutes=1))
    assert too_old.value.expired
    with pytest.raises(LinkError) as foreign:
        verify_lapsed_preference_link(
            token, public, issuer="http://other", now=issued + timedelta(days=8), grace=LINK_REQUEST_GRACE
        )
    assert not foreign.value.expired


def test_per_subject_limits_refill() -> None:
    clock = [0.0]
    limits = ShopperLimits(clock=lambda: clock[0])
    for _ in range(3):
        limits.check("link-request", "s")
    limits.check("link-request", "other")
    with pytest.raises(TooManyRequests) as over:
        limits.check("link-request", "s")
    assert int(over.value.headers["Retry-After"]) > 0
    clock[0] += 1200.0
    limits.check("link-request", "s")


def test_forwarded_addresses_are_cut_before_they_are_kept() -> None:
    assert _truncated_ip("203.0.113.77, 10.0.0.1") == "203.0.113.0"
    assert _truncated_ip("2001:db8:1234:5678::1") == "2001:db8:1234::"
    assert _truncated_ip("not-an-address") is None
    assert _truncated_ip(None) is None
