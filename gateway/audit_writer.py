"""Group commit of release audit rows: one multi-row INSERT and one COMMIT for many releases.

Every release writes one audit row, and no field may leave before its row is committed. Committing
each row in its own request transaction costs a flush through the ORM and a COMMIT round trip (with
its WAL flush) per release; under load, releases arrive together, so their rows can share both.

:meth:`AuditWriter.record` queues the row and waits until the batch holding it is committed. One
writer task takes up to ``max_rows`` queued rows at a time, inserts them in one statement and commits;
rows queued meanwhile form the next batch. There is no timer: with nothing in flight a row is written
at the next turn of the event loop, and the busier the gateway, the larger the batches.

Durability is that of the per-request transaction: :meth:`record` returns only after COMMIT. If the
batch fails, every release in it fails with 503 and nothing is released.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from sqlalchemy import Table, insert

from gateway.models import ReleaseRecord
from tillit.db import Database
from tillit.problems import Unavailable

__all__ = ["MAX_BATCH_ROWS", "AuditWriter"]

MAX_BATCH_ROWS: Final = 256
_log = logging.getLogger("tillit.gateway.audit")


class AuditWriter:
    """Writes :class:`ReleaseRecord` rows in batches; one per process, closed on shutdown."""

    def __init__(self, database: Database, max_rows: int = MAX_BATCH_ROWS) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        self._database = database
        self._max_rows = max_rows
        self._table: Table = ReleaseRecord.__table__  # type: ignore[attr-defined]
        self._columns = [column.name for column in self._table.columns]
        self._statement = insert(self._table)
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def record(self, record: ReleaseRecord) -> None:
        """Return once ``record`` is committed; raise :class:`Unavailable` (503) if it could not be."""
        if self._closed:
            raise Unavailable("the gateway is shutting down; nothing is released", slug="audit-unavailable")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(({name: getattr(record, name) for name in self._columns}, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        # A caller that goes away cancels only its wait: its row stays queued and is written.
        await done

    async def close(self) -> None:
        """Write what is queued, then refuse new records."""
        self._closed = True
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_all(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_rows]
                del self._queue[: self._max_rows]
                await self._write(batch)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        try:
            async with self._database.engine.begin() as connection:
                await connection.execute(self._statement, [row for row, _ in batch])
        except BaseException as exc:
            _log.error("release audit batch of %d rows failed: %s: %s", len(batch), type(exc).__name__, exc)
            for _, done in batch:
                if not done.done():
                    problem = Unavailable(
                        "the release could not be recorded in the audit, so nothing is released",
                        slug="audit-unavailable",
                    )
                    problem.__cause__ = exc
                    done.set_exception(problem)
            if not isinstance(exc, Exception):
                raise
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
