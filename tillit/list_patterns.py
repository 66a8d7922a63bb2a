"""A string pattern held by every item of a long list, checked in one regex pass over the list.

msgspec checks a ``Meta(pattern=...)`` with one ``re.search`` call per string: for the up to 500
candidate products of a decision that was about half of decoding the body, in the gateway and in
the rules service alike. A :class:`ListPattern` publishes the same ``pattern`` in the JSON Schema
but leaves the per-item check out of the decode; the Struct holding the list checks all items at
once in ``__post_init__`` (which msgspec runs while decoding), and only a list that fails is walked
item by item to name the first offender the way msgspec words it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

import msgspec

from tillit.patterns import exact, inner, published

__all__ = ["ListPattern"]

_SEPARATOR: Final = "\x00"


class ListPattern:
    """An :func:`~tillit.patterns.exact` pattern checked as msgspec checks it (``re.search``)."""

    def __init__(self, pattern: str) -> None:
        if pattern != exact(published(pattern)):
            raise ValueError("a list pattern is exact (tillit.patterns.exact)")
        self.pattern = pattern
        self.meta = msgspec.Meta(extra_json_schema={"pattern": pattern})
        """For the item's field: the pattern in the schema (published as ECMA reads it), not checked by the decoder."""
        self._one = re.compile(pattern)
        # Each item, then the separator: an item matches ``^X$`` (exact) when ``X`` is all of it.
        self._all = re.compile(f"(?:(?:{inner(pattern)}){_SEPARATOR})*")

    def check(self, values: Sequence[str], where: Callable[[int], str]) -> None:
        """Raise ``ValueError`` (msgspec's words, ``where(index)`` the path) at the first value not matching."""
        joined = _SEPARATOR.join(values) + _SEPARATOR if values else ""
        # A value holding the separator would split in two: then each is checked on its own.
        if joined.count(_SEPARATOR) == len(values) and self._all.fullmatch(joined):
            return
        for index, value in enumerate(values):
            if not self._one.search(value):
                raise ValueError(f"Expected `str` matching regex {self.pattern!r} - at `{where(index)}`")
