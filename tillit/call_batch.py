"""Batched calls: requests that concurrent callers make of one service, sent together in one call.

:mod:`tillit.read_batch` batches reads by key (one answer per key, shared by every caller asking for it).
Some calls are not reads by key: a personalization decision carries its own profile, context and
candidates, and each caller needs its own answer. :class:`CallBatcher` queues such requests and sends
up to ``max_batch`` of them in one call whose answer holds one result per request, in order: the
value, or an exception for that request alone. As there, a batch leaves at the next turn of the event
loop, or, with a :class:`~tillit.read_batch.Linger`, may wait a little for company while others wait.

Fail closed: if the call itself fails, every request in the batch fails with its own exception from
``failure``; a caller that goes away cancels only its own wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from tillit.read_batch import MAX_IN_FLIGHT, NO_LINGER, Linger

__all__ = ["MAX_BATCH_CALLS", "CallBatcher"]

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH_CALLS: Final = 32
_log = logging.getLogger("tillit.call_batch")


class CallBatcher(Generic[T, R]):
    """Sends queued requests in batches; each caller gets its own result or exception."""

    def __init__(
        self,
        call: Callable[[list[T]], Awaitable[Sequence[R | BaseException]]],
        failure: Callable[[BaseException], BaseException],
        *,
        max_batch: int = MAX_BATCH_CALLS,
        max_in_flight: int = MAX_IN_FLIGHT,
        linger: Linger = NO_LINGER,
    ) -> None:
        """``call`` answers one result per request, in order; ``linger``: its own instance per batcher."""
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be >= 1")
        self._call = call
        self._failure = failure
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger = linger
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._senders: set[asyncio.Task[None]] = set()

    async def call(self, request: T) -> R:
        """The result of ``request``, sent in a batch after this call began."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((request, done))
        if self._linger.waiting:  # that batch takes this request when it leaves
            self._linger.queued(len(self._queue))
        elif sum(1 for sender in self._senders if not sender.done()) < self._max_in_flight:
            sender = asyncio.create_task(self._send_all())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return await done

    async def close(self) -> None:
        """Let the batches in flight finish (their callers get their answers)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    async def _send_all(self) -> None:
        while self._queue:
            if self._linger.waiting:  # a lingering batch takes the queue when it leaves
                return
            if self._linger.worth_waiting(len(self._queue), self._in_flight):
                await self._linger.wait()
            batch = [(request, done) for request, done in self._queue[: self._max_batch] if not done.done()]
            del self._queue[: self._max_batch]
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._in_flight += len(batch)
        try:
            results = await self._call([request for request, _ in batch])
            if len(results) != len(batch):
                raise ValueError(f"{len(results)} results for {len(batch)} requests")
        except BaseException as exc:
            if isinstance(exc, Exception):
                _log.warning("batched call of %d requests failed: %s: %s", len(batch), type(exc).__name__, exc)
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
