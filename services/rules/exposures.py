"""Experiment exposures counted as aggregates: (experiment, arm, day) -> count, nothing else.

A decision adds to a counter in memory; a background task adds the counters to the database every
:data:`FLUSH_SECONDS` (one upsert per counter, so replicas add up) and once more on shutdown. A
crash loses at most that interval's counts — they are statistics, not records. No assignment key,
subject or profile is ever kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from contextlib import nullcontext
from datetime import date
from typing import Final

from services.rules.repository import ExposureRepository
from tillit.db import Database
from tillit.types import utcnow

__all__ = ["FLUSH_SECONDS", "ExposureCounter"]

FLUSH_SECONDS: Final = 1.0
_log = logging.getLogger("tillit.rules.exposures")


class ExposureCounter:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, date]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def count(self, experiment: str, arm: str) -> None:
        self._counts[(experiment, arm, utcnow().date())] += 1

    async def flush(self, database: Database) -> None:
        """Add what was counted since the last flush to the database; kept for the next one if that fails."""
        if not self._counts:
            return
        pending, self._counts = self._counts, Counter()
        try:
            async with (
                database.write_turns or nullcontext(),
                database.sessionmaker() as session,
                session.begin(),
            ):
                await ExposureRepository(session).add_counts((e, a, d, n) for (e, a, d), n in pending.items())
        except Exception:
            self._counts.update(pending)
            raise

    def start(self, database: Database) -> None:
        async def run() -> None:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                try:
                    await self.flush(database)
                except Exception:
                    _log.warning("exposure counts could not be written; they are kept for the next try", exc_info=True)

        self._task = asyncio.get_running_loop().create_task(run())

    async def stop(self, database: Database) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush(database)
