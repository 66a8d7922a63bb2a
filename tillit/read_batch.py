"""Batched reads: the keys that concurrent requests ask for, fetched in one call per batch.

Under load, requests that each read one row by key arrive together, so their reads can share one
SQL statement (``WHERE subject_id = ANY($1)``) or one upstream HTTP request: one round trip and one
write system call for the batch instead of one per request — on these machines the ``send`` to
PostgreSQL alone was a third of a single profile read's CPU (py-spy ``--native``).

:meth:`ReadBatcher.get` queues a key and waits for the batch holding it. A sender task takes up to
``max_batch`` queued keys at a time and fetches them in one call; keys queued meanwhile form the next
batch. There is no timer: with no batch in flight a key goes out at the next turn of the event loop,
and the busier the process, the larger the batches.

No stale answer: a batch is taken from the queue when it is sent, so a key only ever joins a batch
that has not been sent yet, and every answer is read after its request arrived — a write
acknowledged before a read began is seen by that read.

Fail closed: if the fetch fails, every caller in the batch gets its own exception from ``failure``.
A caller that goes away cancels only its own wait; the batch goes on for the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Generic, TypeVar

from tillit.problems import Unavailable

__all__ = ["MAX_BATCH_KEYS", "MAX_IN_FLIGHT", "ReadBatcher", "database_unavailable"]

K = TypeVar("K")
V = TypeVar("V")

MAX_BATCH_KEYS: Final = 128
"""Keys per fetch: well under the services' 5000 per batch request, and one slow batch holds few callers."""
MAX_IN_FLIGHT: Final = 2
"""Batches of one batcher in flight at once: a new batch need not wait for a whole round trip."""

_log = logging.getLogger("tillit.read_batch")


def database_unavailable(what: str) -> Callable[[BaseException], Unavailable]:
    """A ``failure`` for batches read from the service's own database: a 503 the caller may retry."""

    def failure(exc: BaseException) -> Unavailable:
        return Unavailable(
            f"{what} could not be read ({type(exc).__name__}); nothing was answered, try again",
            slug="database-unavailable",
            headers={"Retry-After": "1"},
        )

    return failure


class ReadBatcher(Generic[K, V]):
    """Fetches the values of queued keys in batches; ``None`` for a key the answer leaves out."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        failure: Callable[[BaseException], BaseException],
        *,
        max_batch: int = MAX_BATCH_KEYS,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self._fetch = fetch
        self._failure = failure
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._queue: list[tuple[K, asyncio.Future[V | None]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        """The value read for ``key`` by a fetch sent after this call began; raise as ``failure`` says."""
        return await self.submit(key)

    def submit(self, key: K) -> asyncio.Future[V | None]:
        """Queue ``key`` now; the future is :meth:`get`'s answer (cancel it to stop waiting).

        Two reads of one request can be queued without a task each and awaited together.
        """
        done: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._queue.append((key, done))
        # A sender that has returned stays in the set until its done-callback runs, a turn later: a key
        # queued meanwhile would wait for the next submit (for ever on a quiet gateway). Count the live ones.
        if sum(1 for sender in self._senders if not sender.done()) < self._max_in_flight:
            sender = asyncio.create_task(self._send_all())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return done

    async def close(self) -> None:
        """Let the batches in flight finish (their callers get their answers)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    async def _send_all(self) -> None:
        while self._queue:
            batch = [(key, done) for key, done in self._queue[: self._max_batch] if not done.done()]
            del self._queue[: self._max_batch]
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[tuple[K, asyncio.Future[V | None]]]) -> None:
        keys = list(dict.fromkeys(key for key, _ in batch))
        try:
            values = await self._fetch(keys)
        except BaseException as exc:
            if isinstance(exc, Exception):
                _log.warning("batched read of %d keys failed: %s: %s", len(keys), type(exc).__name__, exc)
            for _, done in batch:
                if not done.done():
                    done.set_exception(self._failure(exc))
            if not isinstance(exc, Exception):
                raise
            return
        for key, done in batch:
            if not done.done():
                done.set_result(values.get(key))
