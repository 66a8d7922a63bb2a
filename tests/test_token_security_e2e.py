"""Access tokens under attack: every malformed, forged or misdirected token is a 401 problem.

Complements ``test_release_e2e.py`` (missing, garbage, forged with the real kid, expired, wrong
audience, wrong scheme, lacking scope): algorithm confusion and ``alg: none``, wrong ``typ``, wrong
issuer, unknown ``kid``, missing claims, not yet valid, oversized tokens and oversized requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.clients import SCOPES
from tests.platform import RunningPlatform
from tests.test_release_e2e import ASTRID, EMAIL, assert_problem, profile

pytestmark = pytest.mark.slow


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(stack: RunningPlatform, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": stack.gateway,
        "aud": "tillit-gateway",
        "client_id": stack.channels["email"].client_id,
        "sub": stack.channels["email"].client_id,
        "channel": "email",
        "scope": "profiles:read",
        "iat": now,
        "exp": now + 300,
        "jti": "security-test",
        **overrides,
    }
    return {name: value for name, value in claims.items() if value is not None}


def _signed(
    stack: RunningPlatform, key: ECKey | None = None, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    key = key or stack.access_signing_key()
    header = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **(header or {})}
    header = {name: value for name, value in header.items() if value is not None}
    return jwt.encode(header, _claims(stack, **claims), key)


def _unsigned(stack: RunningPlatform) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    return f"{header}.{_b64(json.dumps(_claims(stack)).encode())}."


def _hs256_with_the_public_key(stack: RunningPlatform) -> str:
    """Algorithm confusion: HMAC keyed with the published public key, which anyone can fetch."""
    public = httpx.get(f"{stack.gateway}/.well-known/jwks.json").json()["keys"][0]
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": public["kid"]}).encode())
    payload = _b64(json.dumps(_claims(stack)).encode())
    secret = json.dumps(public, sort_keys=True).encode()
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


ATTACKS = {
    "alg-none": _unsigned,
    "hs256-with-public-key": _hs256_with_the_public_key,
    "typ-jwt": lambda stack: _signed(stack, header={"typ": "JWT"}),
    "typ-missing": lambda stack: _signed(stack, header={"typ": None}),
    "wrong-issuer": lambda stack: _signed(stack, iss="https://evil.example"),
    "unknown-kid": lambda stack: _signed(
        stack, ECKey.generate_key("P-256", parameters={"kid": "access-token-unknown"})
    ),
    "no-client-id": lambda stack: _signed(stack, client_id=None),
    "no-channel": lambda stack: _signed(stack, channel=None),
    "no-expiry": lambda stack: _signed(stack, exp=None),
    "not-yet-valid": lambda stack: _signed(stack, nbf=int(time.time()) + 3600),
    "other-audience-list": lambda stack: _signed(stack, aud=["consent", "preferences"]),
    "truncated-signature": lambda stack: _signed(stack)[:-10],
    "two-segments": lambda stack: ".".join(_signed(stack).split(".")[:2]),
    "oversized": lambda stack: _signed(stack, padding="x" * 6000),
    "non-ascii": lambda _stack: "tøken.ünïcode.x",
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_forged_or_misdirected_tokens_are_refused(stack: RunningPlatform, attack: str) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    token = ATTACKS[attack](stack)
    response = profile(stack, subject, headers={"Authorization": f"Bearer {token}".encode()})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "astrid@example.com" not in response.text


def test_a_valid_token_of_another_channel_cannot_use_this_channels_purpose(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    response = profile(stack, subject, headers=stack.auth("sms"))
    assert_problem(response, 403, "purpose-not-registered")
    assert "astrid@example.com" not in response.text


@pytest.mark.parametrize(
    ("path", "params", "statuses"),
    [
        ("/v1/subjects/" + "a" * 65 + "/profile", {"purpose": EMAIL}, {400}),
        ("/v1/subjects/" + "a" * 5000 + "/profile", {"purpose": EMAIL}, {400, 404, 414, 431}),
        ("/v1/subjects/ok-id/profile", {"purpose": "a" * 101}, {400}),
        ("/v1/subjects/ok-id/profile", {"purpose": "a." * 20_000}, {400, 414, 431}),
        ("/v1/subjects/ok-id/decisions", {"purpose": EMAIL, "slots": ",".join(["s"] * 11)}, {400}),
        ("/v1/subjects/ok-id/decisions", {"purpose": EMAIL, "visit_count": "9" * 40}, {400}),
        ("/v1/audit/releases", {"subject_id": "a" * 65}, {400}),
        ("/v1/audit/releases", {"channel": "email", "limit": 100_000}, {400}),
        ("/v1/audit/releases", {"channel": "email", "after": "x" * 201}, {400}),
    ],
)
def test_oversized_ids_and_queries_are_refused_with_a_4xx(
    stack: RunningPlatform, path: str, params: dict[str, Any], statuses: set[int]
) -> None:
    if "fuzz" not in stack.channels:
        stack.add_channel("email", list(SCOPES), name="fuzz")
    response = httpx.get(f"{stack.gateway}{path}", params=params, headers=stack.auth("fuzz"))
    assert response.status_code in statuses, response.text[:500]
    if response.status_code == 400:
        assert_problem(response, 400)
