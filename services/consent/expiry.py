"""Recording consents that ran out: an ``expired`` event per lapsed consent, swept periodically.

Reads never count an expired consent as active, whether or not this has run; the sweep writes the
fact into the ledger so the history and the export show when consent ended. Each expiry is its own
transaction, re-checked under the subject's chain lock, so several replicas may sweep at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from litestar import Litestar

from services.consent.repository import ConsentRepository
from services.consent.service import ConsentService, SigningKeys
from tillit.background import PeriodicHooks, periodic
from tillit.db import Database
from tillit.policy import Policy
from tillit.types import utcnow

__all__ = ["expiry_sweeper", "sweep_once"]


async def sweep_once(
    database: Database,
    policy: Policy,
    keys: SigningKeys,
    clock: Callable[[], datetime] = utcnow,
    batch: int = 500,
) -> int:
    """Record every lapsed consent found (up to ``batch``); the number recorded."""

    @asynccontextmanager
    async def service(transaction: bool) -> AsyncIterator[ConsentService]:
        async with database.sessionmaker() as session:
            if transaction:
                async with session.begin():
                    yield ConsentService(ConsentRepository(session), policy, keys, clock)
            else:
                yield ConsentService(ConsentRepository(session), policy, keys, clock)

    async with service(transaction=False) as reader:
        lapsed = await reader.lapsed(batch)
    recorded = 0
    for subject_id, purpose in lapsed:
        async with service(transaction=True) as writer:
            if await writer.expire(subject_id, purpose) is not None:
                recorded += 1
    return recorded


def expiry_sweeper(interval: float) -> PeriodicHooks:
    """Start and stop hooks that sweep every ``interval`` seconds while the app runs (0 disables)."""

    async def sweep(app: Litestar) -> int:
        return await sweep_once(app.state.database, app.state.policy, app.state.signing_keys)

    return periodic("consent-expiry", interval, sweep)
