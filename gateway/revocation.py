"""Disabled channel clients: their already-issued access tokens are refused too.

Access tokens are self-contained JWTs, so disabling a client in the database does not by itself
stop the tokens it already holds (up to the access-token lifetime, five minutes by default). Each
gateway process therefore keeps the set of disabled client ids in memory and re-reads it from the
gateway database every ``interval`` seconds; :meth:`DisabledClients.check` runs on every API call.

Why a refreshed set and not a lookup per request: a per-request lookup adds a database round trip
to every call on the hot path, for an event (disabling a client) that happens a few times a year.
The set costs one indexed query per process every ``interval`` seconds, however busy the gateway
is. Every replica reads the same table, so a disabled client's tokens are refused on *every*
replica within ``interval`` seconds (plus one query) of ``tillit clients disable`` — the bound the
CLI states. Fail closed: when the set could not be refreshed for ``max_age`` seconds (the database
is unreachable), tokens are not accepted at all (503) rather than checked against a stale set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from gateway.repository import ClientRepository
from tillit.db import Database
from tillit.problems import Unauthorized, Unavailable

__all__ = ["REFRESH_SECONDS", "DisabledClients"]

REFRESH_SECONDS: Final = 2.0
_log = logging.getLogger("tillit.gateway.revocation")


class DisabledClients:
    def __init__(self, database: Database, interval: float = REFRESH_SECONDS, max_age: float | None = None) -> None:
        self._database = database
        self.interval = interval
        self.max_age = max_age if max_age is not None else max(5 * interval, 10.0)
        self._ids: frozenset[str] = frozenset()
        self._refreshed_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        async with self._database.sessionmaker() as session:
            self._ids = await ClientRepository(session).disabled_ids()
        self._refreshed_at = time.monotonic()

    def check(self, client_id: str) -> None:
        """Refuse a token of a disabled client (401), or any token while the set is too old (503)."""
        if time.monotonic() - self._refreshed_at > self.max_age:
            raise Unavailable(
                "the gateway cannot currently confirm that this client is still enabled; try again",
                slug="client-state-unavailable",
            )
        if client_id in self._ids:
            raise Unauthorized(f"client {client_id!r} is disabled; its tokens are no longer accepted")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.refresh()
            except Exception as exc:  # keep refreshing; check() fails closed once the set is too old
                _log.warning("could not refresh the disabled clients: %s", exc)

    async def start(self) -> None:
        """Load the set once (before the first request), then keep it fresh in the background."""
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="disabled-clients")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
