"""Shopper tokens: what a preference link is exchanged for, and the only key to ``/v1/me``.

A shopper token is a JWT signed ES256 with the gateway's access-token key, but it can never pass for
a channel's access token nor the other way round: it has its own ``typ`` (``shopper+jwt``, channel
tokens are ``at+jwt``), its own audience (``tillit-shopper``) and the one scope ``shopper``, and each
verifier checks all three. Its subject is the only subject ``/v1/me`` ever acts on.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from tillit.keys import SIGNING_ALGORITHM
from tillit.problems import Unauthorized

__all__ = [
    "MAX_SHOPPER_TOKEN_LENGTH",
    "SHOPPER_AUDIENCE",
    "SHOPPER_SCOPE",
    "SHOPPER_TOKEN_TYPE",
    "Shopper",
    "ShopperTokens",
]

SHOPPER_TOKEN_TYPE: Final = "shopper+jwt"  # noqa: S105 - a JWT typ, not a secret
SHOPPER_AUDIENCE: Final = "tillit-shopper"
SHOPPER_SCOPE: Final = "shopper"
MAX_SHOPPER_TOKEN_LENGTH: Final = 2048
_LEEWAY: Final = 5
_VERIFIED_CACHE_SIZE: Final = 4096


class Shopper(msgspec.Struct, frozen=True):
    """The shopper behind a verified shopper token."""

    subject_id: str
    link_id: str
    """The ``jti`` of the preference link the session was opened with."""
    expires_at: datetime


class ShopperTokens:
    """Issues and verifies shopper tokens with the access-token key set."""

    def __init__(self, signing_key: ECKey, public_keys: KeySet, *, issuer: str, ttl: int) -> None:
        self._key = signing_key
        self._public_keys = public_keys
        self.issuer = issuer
        self.ttl = ttl
        self._claims = jwt.JWTClaimsRegistry(
            leeway=_LEEWAY,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": SHOPPER_AUDIENCE},
            scope={"essential": True, "value": SHOPPER_SCOPE},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            link_id={"essential": True},
        )
        self._verified: dict[str, tuple[float, Shopper]] = {}

    def issue(self, subject_id: str, link_id: str, now: datetime) -> tuple[str, datetime]:
        """A token for ``subject_id`` and when it expires (whole seconds)."""
        expires_at = datetime.fromtimestamp(int((now + timedelta(seconds=self.ttl)).timestamp()), UTC)
        claims = {
            "iss": self.issuer,
            "aud": SHOPPER_AUDIENCE,
            "sub": subject_id,
            "scope": SHOPPER_SCOPE,
            "link_id": link_id,
            "jti": secrets.token_urlsafe(16),
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        }
        header = {"alg": SIGNING_ALGORITHM, "kid": self._key.kid, "typ": SHOPPER_TOKEN_TYPE}
        return jwt.encode(header, claims, self._key, algorithms=[SIGNING_ALGORITHM]), expires_at

    def verify(self, authorization: str | None) -> Shopper:
        """The shopper of a valid ``Authorization: Bearer`` shopper token; 401 for anything else."""
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("a shopper token is required: Authorization: Bearer <token from /v1/shopper/sessions>")
        raw = authorization[7:].strip()
        if not raw or len(raw) > MAX_SHOPPER_TOKEN_LENGTH:
            raise Unauthorized("the token is not a shopper token: empty or longer than any issued here")
        cached = self._verified.get(raw)
        if cached is not None and cached[0] > time.time():
            return cached[1]
        try:
            token = jwt.decode(raw, self._public_keys, algorithms=[SIGNING_ALGORITHM])
            if token.header.get("typ") != SHOPPER_TOKEN_TYPE:
                raise Unauthorized(f"the token is not a shopper token (typ {SHOPPER_TOKEN_TYPE})")
            self._claims.validate(token.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise Unauthorized(f"the shopper token is not valid: {exc}") from exc
        claims = token.claims
        subject_id, link_id = claims.get("sub"), claims.get("link_id")
        if not isinstance(subject_id, str) or not isinstance(link_id, str):
            raise Unauthorized("the shopper token is not valid: sub and link_id must be strings")
        expires = int(claims["exp"])
        shopper = Shopper(subject_id=subject_id, link_id=link_id, expires_at=datetime.fromtimestamp(expires, UTC))
        # The preference center sends the same token on every call of a session (two or three per page);
        # the ES256 check (~12 % of the gateway's CPU per /v1/me call) is done once per token. Nothing
        # else about a token can change before it expires: verification reads no state.
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[raw] = (float(expires), shopper)
        return shopper
