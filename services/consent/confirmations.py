"""Double opt-in confirmation tokens: signed, expiring, naming the pending event they confirm.

The token travels in a link the channel e-mails to the shopper; it is a JWT signed with the consent
service's receipt key (typ ``consent-confirmation+jwt``), so only this service can mint one and a
token for one shopper's pending consent cannot confirm anything else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import msgspec
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import KeySet, OKPKey

from tillit.keys import RECEIPT_ALGORITHM

__all__ = ["CONFIRMATION_LIFETIME", "Confirmation", "ConfirmationError", "issue_confirmation", "read_confirmation"]

CONFIRMATION_LIFETIME: Final = timedelta(hours=72)
_TYPE: Final = "consent-confirmation+jwt"
_ISSUER: Final = "tillit-consent"


class ConfirmationError(ValueError):
    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class Confirmation(msgspec.Struct, frozen=True):
    subject_id: str
    purpose: str
    event_id: str
    expires_at: datetime


def issue_confirmation(
    key: OKPKey, subject_id: str, purpose: str, event_id: str, now: datetime
) -> tuple[str, datetime]:
    expires_at = now + CONFIRMATION_LIFETIME
    claims = {
        "iss": _ISSUER,
        "sub": subject_id,
        "purpose": purpose,
        "event": event_id,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    header = {"alg": RECEIPT_ALGORITHM, "kid": key.kid, "typ": _TYPE}
    return jwt.encode(header, claims, key, algorithms=[RECEIPT_ALGORITHM]), expires_at


def read_confirmation(token: str, keys: KeySet, now: datetime) -> Confirmation:
    try:
        decoded = jwt.decode(token, keys, algorithms=[RECEIPT_ALGORITHM])
    except (JoseError, ValueError) as exc:
        raise ConfirmationError(f"the confirmation link is not valid: {exc}") from exc
    if decoded.header.get("typ") != _TYPE:
        raise ConfirmationError("the token is not a consent confirmation")
    registry = jwt.JWTClaimsRegistry(
        now=int(now.timestamp()),
        iss={"essential": True, "value": _ISSUER},
        sub={"essential": True},
        exp={"essential": True},
        purpose={"essential": True},
        event={"essential": True},
    )
    try:
        registry.validate(decoded.claims)
    except ExpiredTokenError as exc:
        raise ConfirmationError("the confirmation link has expired; ask for a new one", expired=True) from exc
    except JoseError as exc:
        raise ConfirmationError(f"the confirmation link is not valid: {exc}") from exc
    claims = decoded.claims
    return Confirmation(
        subject_id=str(claims["sub"]),
        purpose=str(claims["purpose"]),
        event_id=str(claims["event"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo),
    )
