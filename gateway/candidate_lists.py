"""Candidate lists the gateway saw lately: their SHA-256 once, and a decision body read around them.

A shop sends the same list (a category page's products, in its order) for many shoppers. For each
decision the gateway read the caller's ~24 KB of it twice over: msgspec skipping it inside the body
(it validates every byte) and SHA-256 for its digest (:meth:`gateway.upstream.Upstream.decide`).
Under ``bench.decisions`` that was ~15 % of the gateway's CPU per decision.

:class:`KnownLists` keeps the exact bytes of recent lists that came in a body that decoded, each with
its digest, bounded in entries and bytes. :func:`decode_around_known_list` then reads a body whose
``candidates`` value is byte for byte a known list without reading the list again: it finds the
value where the one ``"candidates"`` key puts it, compares it with the known bytes, and decodes the
rest of the body with ``null`` in its place. It answers only when that gives exactly what decoding
the whole body would give, and ``None`` otherwise (the caller then decodes the whole body):

- outside the list the body has no backslash, so every key is spelled plainly, and exactly one
  ``"candidates"``, the key whose value it is (a nested or second such key, or the word as a
  string value, is refused or left to the whole decode);
- the rest decodes strictly with ``null`` there, and ``candidates`` comes out ``null``: so the value
  replaced was the body's candidates, and putting back bytes that already decoded as a JSON value in
  that very place leaves the body valid and every other field the same.

The lists are product lists as the caller sent them (bounded, transient, in this process only):
never a subject id or a profile.
"""

from __future__ import annotations

import hashlib
from typing import Final, TypeVar

import msgspec

__all__ = ["KnownLists", "decode_around_known_list"]

_KEY: Final = b'"candidates"'
_HEAD: Final = 64
"""Bytes a list is indexed by: a list is found by its first bytes, then compared whole."""
_WHITESPACE: Final = frozenset(b" \t\r\n")
_NULL: Final = msgspec.Raw(b"null")
_MIN_BYTES: Final = 1024
"""Shorter lists are read again: reading them costs less than finding them."""

B = TypeVar("B", bound=msgspec.Struct)


class KnownLists:
    """The most recently used candidate lists, by their exact bytes, with their SHA-256 (hex)."""

    def __init__(self, entries: int = 32, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._lists: dict[bytes, str] = {}
        """List bytes -> digest, least recently used first."""
        self._by_head: dict[bytes, list[bytes]] = {}
        self._entries = entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._lists)

    def digest(self, candidates: bytes | msgspec.Raw) -> str:
        """SHA-256 (hex) of ``candidates``: remembered for a list seen lately, else computed (and the
        list remembered)."""
        data = candidates if isinstance(candidates, bytes) else bytes(candidates)
        known = self._known(data)
        if known is not None:
            return self._lists[known]
        digest = hashlib.sha256(data).hexdigest()
        self._remember(data, digest)
        return digest

    def at(self, body: bytes, start: int) -> bytes | None:
        """The known list whose bytes ``body`` holds from ``start`` on, if any."""
        for candidates in self._by_head.get(body[start : start + _HEAD], ()):
            if body.startswith(candidates, start):
                return candidates
        return None

    def _known(self, candidates: bytes) -> bytes | None:
        for known in self._by_head.get(candidates[:_HEAD], ()):
            if known == candidates:
                digest = self._lists.pop(known)
                self._lists[known] = digest  # now the most recently used
                return known
        return None

    def _remember(self, candidates: bytes, digest: str) -> None:
        if len(candidates) < _MIN_BYTES or len(candidates) > self._max_bytes // 4:
            return
        while self._lists and (len(self._lists) >= self._entries or self._bytes + len(candidates) > self._max_bytes):
            self._forget(next(iter(self._lists)))
        self._lists[candidates] = digest
        self._by_head.setdefault(candidates[:_HEAD], []).append(candidates)
        self._bytes += len(candidates)

    def _forget(self, candidates: bytes) -> None:
        del self._lists[candidates]
        head = candidates[:_HEAD]
        same_head = self._by_head[head]
        same_head.remove(candidates)
        if not same_head:
            del self._by_head[head]
        self._bytes -= len(candidates)


def decode_around_known_list(body: bytes, known: KnownLists, decode: msgspec.json.Decoder[B]) -> B | None:
    """``body`` decoded by ``decode`` (a strict decoder of a Struct whose ``candidates`` is
    ``msgspec.Raw``) without reading its candidates again when they are a known list; None when
    that cannot be done exactly (see the module's docstring)."""
    key = body.find(_KEY)
    if key < 0:
        return None
    start = _after(body, key + len(_KEY), colon=True)
    if start < 0:
        return None
    candidates = known.at(body, start)
    if candidates is None:
        return None
    end = start + len(candidates)
    before, after = body[:start], body[end:]
    if b"\\" in before or b"\\" in after or before.count(_KEY) != 1 or _KEY in after:
        return None
    try:
        decoded = decode.decode(before + b"null" + after)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None
    if getattr(decoded, "candidates", None) != _NULL:
        return None
    return msgspec.structs.replace(decoded, candidates=msgspec.Raw(candidates))


def _after(body: bytes, index: int, *, colon: bool) -> int:
    """The index of the first byte after ``index`` that is not JSON whitespace (past one ``:`` when
    ``colon``); -1 if there is none, or no ``:`` where one must be."""
    size = len(body)
    while index < size and body[index] in _WHITESPACE:
        index += 1
    if colon:
        if index >= size or body[index] != 0x3A:
            return -1
        return _after(body, index + 1, colon=False)
    return index if index < size else -1
