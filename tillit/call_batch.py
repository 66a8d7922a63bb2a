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

from collections.abc import Awaitable, Callable, Sequence
from typing import Final, TypeVar

from tillit.read_batch import MAX_IN_FLIGHT, NO_LINGER, Batches, Linger

__all__ = ["MAX_BATCH_CALLS", "CallBatcher"]

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH_CALLS: Final = 32


class CallBatcher(Batches[T, R]):
    """Sends queued requests in batches; each caller gets its own result or exception."""

    _what = "call"

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
        super().__init__(failure, max_batch=max_batch, max_in_flight=max_in_flight, linger=linger)
        self._call = call

    async def call(self, request: T) -> R:
        """The result of ``request``, sent in a batch after this call began."""
        return await self._enqueue(request)

    async def _answers(self, items: list[T]) -> Sequence[R | BaseException]:
        return await self._call(items)
