"""Signed links for shoppers: one-click unsubscribe (RFC 8058) and "manage my preferences".

Both are compact JWS tokens signed ES256 with the gateway's link key (``tillit.keys.LINK_KEY``); the
public keys are published at the gateway's ``/.well-known/link-keys.json``. The two kinds can never
stand in for each other: each has its own ``typ`` header and its own audience, and each verify
function accepts only its own.

- **Unsubscribe** tokens name one subject and one purpose and do **not expire**. Mail sits in inboxes
  for years and RFC 8058 expects its List-Unsubscribe link to keep working; the worst a leaked link
  can do is unsubscribe its own recipient from that one purpose. Rotating the link key revokes
  every outstanding link at once.
- **Preference links** open the shopper's preference center, so they expire
  (``TILLIT_PREFERENCE_LINK_TTL``, 7 days by default) and carry a ``jti`` so that the preference
  center can refuse one it has seen used or revoked.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import ECKey, KeySet

from tillit.keys import SIGNING_ALGORITHM

__all__ = [
    "MAX_TOKEN_LENGTH",
    "PREFERENCE_LINK_AUDIENCE",
    "PREFERENCE_LINK_TYPE",
    "UNSUBSCRIBE_AUDIENCE",
    "UNSUBSCRIBE_TYPE",
    "LinkError",
    "PreferenceLink",
    "Unsubscribe",
    "sign_preference_link",
    "sign_unsubscribe",
    "verify_lapsed_preference_link",
    "verify_preference_link",
    "verify_unsubscribe",
]

UNSUBSCRIBE_TYPE: Final = "unsubscribe+jwt"
UNSUBSCRIBE_AUDIENCE: Final = "tillit-unsubscribe"
PREFERENCE_LINK_TYPE: Final = "preference-link+jwt"
PREFERENCE_LINK_AUDIENCE: Final = "tillit-preference-center"
MAX_TOKEN_LENGTH: Final = 2048
_LEEWAY: Final = 5


class LinkError(ValueError):
    """The token is not a valid link of the kind asked for (``expired``: it was, but ran out)."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class Unsubscribe(msgspec.Struct, frozen=True):
    subject_id: str
    purpose: str
    client_id: str
    issued_at: datetime


class PreferenceLink(msgspec.Struct, frozen=True):
    subject_id: str
    link_id: str
    issued_at: datetime
    expires_at: datetime
    client_id: str


def _sign(key: ECKey, token_type: str, claims: dict[str, Any]) -> str:
    header = {"alg": SIGNING_ALGORITHM, "kid": key.kid, "typ": token_type}
    return jwt.encode(header, claims, key, algorithms=[SIGNING_ALGORITHM])


def sign_unsubscribe(key: ECKey, *, issuer: str, subject_id: str, purpose: str, client_id: str, now: datetime) -> str:
    """A token for ``subject_id``'s one-click unsubscribe from ``purpose``, minted for ``client_id``."""
    claims = {
        "iss": issuer,
        "aud": UNSUBSCRIBE_AUDIENCE,
        "sub": subject_id,
        "purpose": purpose,
        "client_id": client_id,
        "iat": int(now.timestamp()),
    }
    return _sign(key, UNSUBSCRIBE_TYPE, claims)


def sign_preference_link(
    key: ECKey, *, issuer: str, subject_id: str, client_id: str, now: datetime, lifetime: timedelta
) -> tuple[str, datetime]:
    """A token that opens ``subject_id``'s preference center until the returned expiry."""
    expires_at = now + lifetime
    claims = {
        "iss": issuer,
        "aud": PREFERENCE_LINK_AUDIENCE,
        "sub": subject_id,
        "client_id": client_id,
        "jti": secrets.token_urlsafe(16),
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    return _sign(key, PREFERENCE_LINK_TYPE, claims), datetime.fromtimestamp(int(expires_at.timestamp()), UTC)


def _decode(token: str, keys: KeySet, token_type: str, what: str) -> jwt.Token:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise LinkError(f"this is not {what} link: no token, or one too long to be a link")
    try:
        decoded = jwt.decode(token, keys, algorithms=[SIGNING_ALGORITHM])
    except (JoseError, ValueError, TypeError) as exc:
        raise LinkError(f"this is not {what} link that tillit signed: {exc}") from exc
    if decoded.header.get("typ") != token_type:
        raise LinkError(f"the token is not {what} link (typ {token_type})")
    return decoded


def _validate(registry: jwt.JWTClaimsRegistry, claims: dict[str, Any], what: str) -> None:
    try:
        registry.validate(claims)
    except ExpiredTokenError as exc:
        raise LinkError(f"the {what} link has expired; ask for a new one", expired=True) from exc
    except JoseError as exc:
        raise LinkError(f"the {what} link is not valid: {exc}") from exc
    for name, value in claims.items():
        if name in ("sub", "purpose", "client_id", "jti") and not isinstance(value, str):
            raise LinkError(f"the {what} link is not valid: claim {name!r} is not a string")


def verify_unsubscribe(token: str, keys: KeySet, *, issuer: str) -> Unsubscribe:
    """The subject and purpose of a genuine unsubscribe token; :class:`LinkError` otherwise."""
    decoded = _decode(token, keys, UNSUBSCRIBE_TYPE, "an unsubscribe")
    registry = jwt.JWTClaimsRegistry(
        leeway=_LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": UNSUBSCRIBE_AUDIENCE},
        sub={"essential": True},
        purpose={"essential": True},
        client_id={"essential": True},
        iat={"essential": True},
    )
    _validate(registry, decoded.claims, "unsubscribe")
    claims = decoded.claims
    return Unsubscribe(
        subject_id=claims["sub"],
        purpose=claims["purpose"],
        client_id=claims["client_id"],
        issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
    )


def verify_preference_link(token: str, keys: KeySet, *, issuer: str, now: datetime | None = None) -> PreferenceLink:
    """The subject of a genuine, unexpired preference link; :class:`LinkError` otherwise."""
    decoded = _decode(token, keys, PREFERENCE_LINK_TYPE, "a preference")
    return _preference_link(decoded, issuer, int(now.timestamp()) if now is not None else None)


def verify_lapsed_preference_link(
    token: str, keys: KeySet, *, issuer: str, now: datetime, grace: timedelta
) -> PreferenceLink:
    """A genuine preference link, valid or expired less than ``grace`` ago (asking for a new one).

    Everything but the expiry is checked as :func:`verify_preference_link` does; an expiry further
    back than ``grace`` is a :class:`LinkError` with ``expired`` set.
    """
    decoded = _decode(token, keys, PREFERENCE_LINK_TYPE, "a preference")
    expires = decoded.claims.get("exp")
    if not isinstance(expires, int) or isinstance(expires, bool):
        raise LinkError("the preference link is not valid: no expiry")
    link = _preference_link(decoded, issuer, min(int(now.timestamp()), expires - 1))
    if link.expires_at + grace < now:
        raise LinkError("the preference link expired too long ago to ask for a new one with it", expired=True)
    return link


def _preference_link(decoded: jwt.Token, issuer: str, now: int | None) -> PreferenceLink:
    registry = jwt.JWTClaimsRegistry(
        now=now,
        leeway=_LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": PREFERENCE_LINK_AUDIENCE},
        sub={"essential": True},
        client_id={"essential": True},
        jti={"essential": True},
        iat={"essential": True},
        exp={"essential": True},
    )
    _validate(registry, decoded.claims, "preference")
    claims = decoded.claims
    return PreferenceLink(
        subject_id=claims["sub"],
        link_id=claims["jti"],
        client_id=claims["client_id"],
        issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )
