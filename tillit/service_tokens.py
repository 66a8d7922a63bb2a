"""Short-lived tokens the gateway presents to the internal services.

The gateway signs with its private key; each service verifies with the public key, checks that
the token is addressed to it (``aud``) and has not expired. A service answers 401 to any request
on ``/v1`` without such a token, so only the gateway can read or write personal data.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from litestar.types import Scope

from tillit.keys import SIGNING_ALGORITHM
from tillit.problems import Unauthorized

__all__ = ["GATEWAY_ISSUER", "PROTECTED_PREFIX", "ServiceTokenIssuer", "ServiceTokenVerifier", "authorization_of"]

PROTECTED_PREFIX = "/v1/"
"""Every path of an internal service under this prefix needs a service token (health and the
OpenAPI document do not): checked for the whole app, so a new controller cannot forget it."""

GATEWAY_ISSUER = "tillit-gateway"
_ALGORITHMS = [SIGNING_ALGORITHM]
_VERIFIED_CACHE_SIZE = 256


class ServiceTokenIssuer:
    """Mints tokens for one caller; caches one per audience until shortly before it expires."""

    def __init__(self, key: ECKey, ttl_seconds: int = 60, issuer: str = GATEWAY_ISSUER) -> None:
        self._key = key
        self._ttl = ttl_seconds
        self._issuer = issuer
        self._cache: dict[str, tuple[str, float]] = {}

    def token_for(self, audience: str) -> str:
        now = time.time()
        cached = self._cache.get(audience)
        if cached and cached[1] - now > self._ttl / 3:
            return cached[0]
        issued = int(now)
        claims = {
            "iss": self._issuer,
            "sub": self._issuer,
            "aud": audience,
            "iat": issued,
            "exp": issued + self._ttl,
            "jti": secrets.token_hex(8),
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": self._key.kid, "typ": "JWT"}
        token = jwt.encode(header, claims, self._key, algorithms=_ALGORITHMS)
        self._cache[audience] = (token, issued + self._ttl)
        return token

    def headers_for(self, audience: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_for(audience)}"}


class ServiceTokenVerifier:
    def __init__(self, keys: KeySet, audience: str, issuer: str = GATEWAY_ISSUER) -> None:
        self._keys = keys
        self._claims = jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims; a token already verified is trusted again until it expires.

        The gateway reuses one token per service for most of its lifetime, so checking the ECDSA
        signature once per token instead of once per request saves ~0.1 ms of CPU per call.
        """
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("a service token is required (Authorization: Bearer ...)")
        raw = authorization[7:].strip()
        cached = self._verified.get(raw)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        try:
            token = jwt.decode(raw, self._keys, algorithms=_ALGORITHMS)
            self._claims.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"the service token is not valid: {exc}") from exc
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[raw] = (float(token.claims["exp"]), token.claims)
        return token.claims


def authorization_of(scope: Scope) -> str | None:
    """The request's ``Authorization`` header, read from the ASGI scope without building a ``Headers``."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
