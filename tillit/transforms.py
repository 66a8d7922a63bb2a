"""The closed set of transforms a channel's policy may apply to a field before it is released.

A transform turns a value into the form the recipient needs and nothing more: ad platforms match
customers on the SHA-256 of the normalised e-mail or phone number, a greeting needs only the first
name. The set is closed on purpose: a policy names a transform, it cannot bring code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, Final

__all__ = ["TRANSFORMS", "apply_transform", "first_word", "sha256_email", "sha256_phone"]

_NOT_DIGIT = re.compile(r"\D")


def sha256_email(value: str) -> str:
    """SHA-256 hex of the trimmed, lower-cased address (what ad platforms expect for customer match)."""
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


def sha256_phone(value: str) -> str:
    """SHA-256 hex of the E.164 number's digits (country code included, no ``+``, spaces or dashes)."""
    return hashlib.sha256(_NOT_DIGIT.sub("", value).encode("ascii")).hexdigest()


def first_word(value: str) -> str:
    """The first word only, e.g. ``Anna`` of ``Anna Maria``."""
    words = value.split()
    return words[0] if words else ""


TRANSFORMS: Final[dict[str, Callable[[str], str]]] = {
    "sha256_email": sha256_email,
    "sha256_phone": sha256_phone,
    "first_word": first_word,
}


def apply_transform(name: str, value: Any) -> Any:
    """``value`` transformed by ``name``; a list is transformed item by item, other values as text."""
    transform = TRANSFORMS[name]
    if isinstance(value, list):
        return [transform(str(item)) for item in value]
    return transform(value if isinstance(value, str) else str(value))
