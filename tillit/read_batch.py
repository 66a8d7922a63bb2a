"""Batched reads: the keys that concurrent requests ask for, fetched in one call per batch.

Under load, requests that each read one row by key arrive together, so their reads can share one
SQL statement (``WHERE subject_id = ANY($1)``) or one upstream HTTP request: one round trip and one
write system call for the batch instead of one per request — on these machines the ``send`` to
PostgreSQL alone was a third of a single profile read's CPU (py-spy ``--native``).

:meth:`ReadBatcher.get` queues a key and waits for the batch holding it. A sender task takes up to
``max_batch`` queued keys at a time and fetches them in one call; keys queued meanwhile form the next
batch. Without a :class:`Linger` there is no timer: with no batch in flight a key goes out at the
next turn of the event loop, and the busier the process, the larger the batches. With one (the
gateway's reads from the services), a batch started while other callers wait may wait a little
for more keys; a lone caller never waits.

No stale answer: a batch is taken from the queue when it is sent, so a key only ever joins a batch
that has not been sent yet, and every answer is read after its request arrived — a write
acknowledged before a read began is seen by that read.

Fail closed: if the fetch fails, every caller in the batch gets its own exception from ``failure``.
A caller that goes away cancels only its own wait; the batch goes on for the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Final, Generic, TypeVar

from tillit.problems import Unavailable

__all__ = [
    "LINGER_ENOUGH",
    "LINGER_SIBLINGS",
    "MAX_BATCH_KEYS",
    "MAX_IN_FLIGHT",
    "NO_LINGER",
    "Batches",
    "Linger",
    "ReadBatcher",
    "database_unavailable",
]

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


LINGER_ENOUGH: Final = 16
"""Entries a lingering batch waits for at most: past a dozen or so the per-batch cost is amortized."""
LINGER_SIBLINGS: Final = 1
"""Other callers that must be waiting before a batch lingers (PostgreSQL's ``commit_siblings`` is 5).

One: measured under ``bench.decisions`` (same machine, same hour), two left a decision at 0.58 ms of
CPU across the processes and one at 0.51, the release unchanged (0.25) and its ratio to the bare
endpoint 0.29-0.30 either way."""


class Linger:
    """Holds a batch open for company while the process is busy, as PostgreSQL's ``commit_delay`` does.

    Without it a batch leaves at the next turn of the event loop with whatever is queued. When the
    machine is saturated that is only a few keys, and the per-batch cost (an HTTP request to a
    service, a COMMIT) is paid again and again: under ``bench.decisions`` the gateway's batches held
    4-5 releases and the consent service, the preferences service and PostgreSQL cost a third of a
    decision's CPU. Waiting up to ``seconds`` for ``enough`` entries halves that.

    A lone caller never waits: a batch lingers only when at least ``siblings`` other callers are
    waiting on the same batcher (queued or in a batch in flight), the sign of a busy process, and
    only until ``enough`` are queued. ``seconds`` of 0 turns it off.
    """

    def __init__(self, seconds: float, *, enough: int = LINGER_ENOUGH, siblings: int = LINGER_SIBLINGS) -> None:
        if seconds < 0 or enough < 1 or siblings < 1:
            raise ValueError("seconds must be >= 0, enough >= 1 and siblings >= 1 (a lone caller never waits)")
        self.seconds = seconds
        self.enough = enough
        self.siblings = siblings
        self._waiter: asyncio.Future[None] | None = None

    def worth_waiting(self, queued: int, in_flight: int) -> bool:
        """Whether a batch of ``queued`` entries, with ``in_flight`` callers already waiting on
        batches sent, should wait for more."""
        return self.seconds > 0 and queued < self.enough and queued - 1 + in_flight >= self.siblings

    async def wait(self) -> None:
        """Until ``enough`` are queued (:meth:`queued` says so) or ``seconds`` have passed."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self.seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    @property
    def waiting(self) -> bool:
        """A batch is lingering now (it will take what is queued when it stops)."""
        return self._waiter is not None

    def queued(self, count: int) -> None:
        """``count`` entries are queued now: a lingering batch with enough of them leaves."""
        if count >= self.enough and self._waiter is not None:
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


NO_LINGER: Final = Linger(0.0, enough=1)


T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """The queue, the senders and the linger of a batcher: each item queued gets its own result.

    A sender task takes up to ``max_batch`` queued items at a time and asks :meth:`_answers` for their
    results in one call; items queued meanwhile form the next batch; at most ``max_in_flight`` batches
    are in flight. If the call fails, every item in the batch fails with its own exception from
    ``failure``; a caller that goes away cancels only its own wait. :class:`ReadBatcher` and
    :class:`tillit.call_batch.CallBatcher` say what a batch's call is.
    """

    _what = "batch"
    """What a batch is, for the log: "read", "call"."""

    def __init__(
        self,
        failure: Callable[[BaseException], BaseException],
        *,
        max_batch: int,
        max_in_flight: int = MAX_IN_FLIGHT,
        linger: Linger = NO_LINGER,
    ) -> None:
        """``linger``: its own instance per batcher (it tracks that batcher's lingering batch)."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self._failure = failure
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger = linger
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        """Callers waiting on batches sent."""
        self._senders: set[asyncio.Task[None]] = set()

    def _enqueue(self, item: T) -> asyncio.Future[R]:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._linger.waiting:  # that batch takes this item when it leaves
            self._linger.queued(len(self._queue))
            return done
        # A sender that has returned stays in the set until its done-callback runs, a turn later: an item
        # queued meanwhile would wait for the next one (for ever on a quiet gateway). Count the live ones.
        if sum(1 for sender in self._senders if not sender.done()) < self._max_in_flight:
            sender = asyncio.create_task(self._send_all())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return done

    async def close(self) -> None:
        """Let the batches in flight finish (their callers get their answers)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    async def _answers(self, items: list[T]) -> Sequence[R | BaseException]:
        """One result (or exception, for that item alone) per item, in order."""
        raise NotImplementedError

    async def _send_all(self) -> None:
        while self._queue:
            if self._linger.waiting:  # a lingering batch takes the queue when it leaves
                return
            if self._linger.worth_waiting(len(self._queue), self._in_flight):
                await self._linger.wait()
            batch = [(item, done) for item, done in self._queue[: self._max_batch] if not done.done()]
            del self._queue[: self._max_batch]
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._in_flight += len(batch)
        try:
            results = await self._answers([item for item, _ in batch])
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for {len(batch)} items")
        except BaseException as exc:
            if isinstance(exc, Exception):
                _log.warning("batched %s of %d failed: %s: %s", self._what, len(batch), type(exc).__name__, exc)
            for _, done in batch:
                if not done.done():
                    done.set_exception(self._failure(exc))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._in_flight -= len(batch)
        for (_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, BaseException):
                done.set_exception(result)
            else:
                done.set_result(result)


class ReadBatcher(Batches[K, "V | None"]):
    """Fetches the values of queued keys in batches; ``None`` for a key the answer leaves out."""

    _what = "read"

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        failure: Callable[[BaseException], BaseException],
        *,
        max_batch: int = MAX_BATCH_KEYS,
        max_in_flight: int = MAX_IN_FLIGHT,
        linger: Linger = NO_LINGER,
    ) -> None:
        super().__init__(failure, max_batch=max_batch, max_in_flight=max_in_flight, linger=linger)
        self._fetch = fetch

    async def get(self, key: K) -> V | None:
        """The value read for ``key`` by a fetch sent after this call began; raise as ``failure`` says."""
        return await self.submit(key)

    def submit(self, key: K) -> asyncio.Future[V | None]:
        """Queue ``key`` now; the future is :meth:`get`'s answer (cancel it to stop waiting).

        Two reads of one request can be queued without a task each and awaited together.
        """
        return self._enqueue(key)

    async def _answers(self, items: list[K]) -> list[V | None]:
        values = await self._fetch(list(dict.fromkeys(items)))  # a key asked twice is fetched once
        return [values.get(key) for key in items]
