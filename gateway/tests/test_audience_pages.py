"""The pages of an audience export read ahead: in order, bounded, a failure in its page's place."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.audiences import _Examined, _Page, _PagesAhead

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@dataclass
class _Service:
    page_size: int = 2


@dataclass
class _Keyset:
    """Stands in for an export over subjects s00..s09, two per page; later pages complete sooner."""

    pages: int = 5
    fail_examine_at: str | None = None
    fail_complete_at: str | None = None
    service: _Service = field(default_factory=_Service)
    examined: list[str] = field(default_factory=list)
    completing: set[str] = field(default_factory=set)

    async def examine(self, after: str, size: int) -> _Examined:
        self.examined.append(after)
        if after == self.fail_examine_at:
            raise RuntimeError(f"examine after {after}")
        start = 0 if after == "" else int(after[1:]) + 1
        ids = [f"s{n:02d}" for n in range(start, min(start + size, self.pages * size))]
        last = ids[-1] if len(ids) == size and start + size < self.pages * size else None
        return _Examined(None, ids, last)  # type: ignore[arg-type]

    async def complete(self, examined: _Examined) -> _Page:
        ids: list[Any] = examined.profiles or []
        self.completing.add(ids[0])
        await asyncio.sleep(0.01 * (10 - int(ids[0][1:])) / 10)  # the later, the sooner done
        if ids[0] == self.fail_complete_at:
            raise RuntimeError(f"complete {ids[0]}")
        return _Page(ids, examined.last, NOW)


async def _drain(ahead: _PagesAhead) -> list[Any]:
    pages: list[Any] = []
    try:
        while (page := await ahead.next()) is not None:
            pages.append(page.members)
    except RuntimeError as exc:
        pages.append(str(exc))
    finally:
        ahead.close()
    return pages


async def test_pages_come_out_in_keyset_order_whatever_order_they_complete_in() -> None:
    keyset = _Keyset()
    pages = await _drain(_PagesAhead(keyset, "s01", depth=3))  # type: ignore[arg-type]
    assert pages == [["s02", "s03"], ["s04", "s05"], ["s06", "s07"], ["s08", "s09"]]
    assert keyset.examined == ["s01", "s03", "s05", "s07"]


@pytest.mark.parametrize(
    ("keyset", "expected"),
    [
        (_Keyset(fail_examine_at="s05"), [["s02", "s03"], ["s04", "s05"], "examine after s05"]),
        (_Keyset(fail_complete_at="s04"), [["s02", "s03"], "complete s04"]),
    ],
)
async def test_a_failure_comes_out_in_its_pages_place(keyset: _Keyset, expected: list[Any]) -> None:
    assert await _drain(_PagesAhead(keyset, "s01", depth=3)) == expected  # type: ignore[arg-type]


async def test_reading_ahead_stops_depth_pages_ahead_and_close_stops_it() -> None:
    keyset = _Keyset(pages=50)
    ahead = _PagesAhead(keyset, "s01", depth=2)  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    # Two pages queued and the third examined, waiting for room: nothing more until one is taken.
    assert keyset.examined == ["s01", "s03", "s05"]
    first = await ahead.next()
    assert first is not None
    assert first.members == ["s02", "s03"]
    await asyncio.sleep(0.1)
    assert keyset.examined == ["s01", "s03", "s05", "s07"]
    ahead.close()
    await asyncio.sleep(0.05)
    assert keyset.examined == ["s01", "s03", "s05", "s07"]
