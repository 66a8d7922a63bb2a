"""How a delivery is signed, and how long to wait before trying it again.

``Tillit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``: the timestamp is
signed with the body, so a receiver that refuses timestamps more than a few minutes old also refuses
replays of a captured delivery. Every attempt is signed afresh; the body stays the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import secrets
from collections.abc import Callable
from typing import Final

__all__ = [
    "DELIVERY_ID_HEADER",
    "SIGNATURE_HEADER",
    "backoff_delay",
    "new_secret",
    "sign",
    "signature_header",
]

SIGNATURE_HEADER: Final = "Tillit-Signature"
DELIVERY_ID_HEADER: Final = "Tillit-Webhook-Id"
_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix that says what the value is


def new_secret() -> str:
    """A webhook signing secret: 256 random bits."""
    return _SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def backoff_delay(failed_attempts: int, base: float, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before the next attempt after ``failed_attempts`` failures in a row.

    Exponential (base, 2 base, 4 base, ... up to ``cap``) with "equal jitter": somewhere between half
    the step and the whole step, so that a receiver coming back is not hit by every sender at once
    while the delay never falls below half the schedule.
    """
    step = min(cap, base * 2 ** min(max(failed_attempts - 1, 0), 62))
    return step / 2 + jitter() * step / 2
