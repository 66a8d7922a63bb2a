"""String patterns that mean the same to the server as to the JSON Schema it publishes.

msgspec and Litestar check ``pattern`` with Python's ``re``, where ``$`` also matches just before a
string's final newline: ``"abc\\n"`` passes ``^[a-z]+$``. The published OpenAPI documents are read
with ECMA-262 semantics (clients, validators, schemathesis), where it does not. So a subject id with
a trailing newline was accepted as a second, different subject (one that an erasure of ``abc`` would
never reach), and a schema-violating request was answered 2xx.

:func:`exact` appends a lookahead for "no character follows" after the final ``$``: the end of the
string in both languages. The documents publish patterns without it (:func:`published`, applied by
:class:`tillit.openapi.PreciseRenderPlugin`), which in ECMA means exactly the same.
"""

from __future__ import annotations

from typing import Final

__all__ = ["STRING_END", "exact", "inner", "published"]

STRING_END: Final = r"(?![\s\S])"
"""After a final ``$``: no character follows (Python's ``$`` alone allows one newline)."""


def exact(pattern: str) -> str:
    """``^...$`` as ECMA reads it, for Python's ``re`` too."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"an exact pattern is anchored at both ends (^...$): {pattern!r}")
    return pattern + STRING_END


_REPR_END: Final = "$" + STRING_END.replace("\\", "\\\\")


def published(text: str) -> str:
    """A pattern as the OpenAPI documents publish it (same meaning in ECMA-262); in a message, every
    pattern quoted in it (msgspec quotes them with ``repr``, backslashes doubled)."""
    return text.replace("$" + STRING_END, "$").replace(_REPR_END, "$")


def inner(pattern: str) -> str:
    """An :func:`exact` pattern without its anchors, to splice into a larger regex."""
    return published(pattern).removeprefix("^").removesuffix("$")
