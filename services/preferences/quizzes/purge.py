"""Removing abandoned quiz sessions: their answers are personal data kept for no purpose.

A session that expired stays a little longer (``PURGE_GRACE``) so a shopper returning to it is told
it expired (410) rather than that it never existed; after that its row is deleted. The anonymous
counters (starts, drop-off) are aggregates and stay.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from litestar import Litestar

from services.preferences.quizzes.repository import QuizRepository
from tillit.background import PeriodicHooks, periodic
from tillit.db import Database
from tillit.types import utcnow

__all__ = ["PURGE_GRACE", "purge_once", "session_purger"]

PURGE_GRACE: Final = timedelta(days=7)
_BATCH: Final = 1000


async def purge_once(database: Database, clock: Callable[[], datetime] = utcnow, batch: int = _BATCH) -> int:
    """Delete abandoned sessions in batches of ``batch``, each its own transaction; how many went."""
    cutoff = clock() - PURGE_GRACE
    purged = 0
    while True:
        async with database.sessionmaker() as session, session.begin():
            removed = await QuizRepository(session).purge_sessions_expired_before(cutoff, batch)
        purged += removed
        if removed < batch:
            return purged


def session_purger(interval: float) -> PeriodicHooks:
    """Start and stop hooks that purge every ``interval`` seconds (0 disables)."""

    async def purge(app: Litestar) -> int:
        return await purge_once(app.state.database)

    return periodic("quiz-session-purge", interval, purge)
