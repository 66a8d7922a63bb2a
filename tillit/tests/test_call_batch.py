"""Batched calls (tillit.call_batch): one call for many requests, each caller its own answer, fail closed."""

from __future__ import annotations

import asyncio

import pytest

from tillit.call_batch import CallBatcher
from tillit.problems import Unavailable
from tillit.read_batch import Linger
from tillit.tests.batching import failure, settle

pytestmark = pytest.mark.anyio


class Doubler:
    """A service that doubles numbers, refuses negative ones, and answers once let through."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: BaseException | None = None
        self.short = False

    async def call(self, numbers: list[int]) -> list[int | BaseException]:
        self.calls.append(numbers)
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        answers: list[int | BaseException] = [
            ValueError(f"{number} is negative") if number < 0 else number * 2 for number in numbers
        ]
        return answers[:-1] if self.short else answers


async def test_calls_made_together_share_one_call_and_each_gets_its_own_answer() -> None:
    service = Doubler()
    batcher = CallBatcher(service.call, failure)
    assert await asyncio.gather(*(batcher.call(number) for number in (1, 2, 1, 3))) == [2, 4, 2, 6]
    assert service.calls == [[1, 2, 1, 3]]  # not deduplicated: each request is its own


async def test_a_request_the_service_refuses_fails_alone() -> None:
    batcher = CallBatcher(Doubler().call, failure)
    answers = await asyncio.gather(batcher.call(1), batcher.call(-1), batcher.call(2), return_exceptions=True)
    assert answers[0] == 2
    assert answers[2] == 4
    assert isinstance(answers[1], ValueError)
    assert str(answers[1]) == "-1 is negative"


@pytest.mark.parametrize("short", [False, True])
async def test_a_failed_call_or_a_wrong_count_of_answers_fails_every_request_in_the_batch(short: bool) -> None:
    service = Doubler()
    service.short = short
    if not short:
        service.failure = ConnectionResetError("gone")
    batcher = CallBatcher(service.call, failure)
    answers = await asyncio.gather(batcher.call(1), batcher.call(2), return_exceptions=True)
    assert all(isinstance(answer, Unavailable) for answer in answers)
    assert answers[0] is not answers[1]  # each caller its own exception


async def test_calls_made_while_a_batch_is_in_flight_go_out_together_next() -> None:
    service = Doubler()
    batcher = CallBatcher(service.call, failure, max_batch=2, max_in_flight=1)
    service.gate.clear()
    first = asyncio.ensure_future(batcher.call(1))
    await settle()
    rest = asyncio.ensure_future(asyncio.gather(*(batcher.call(number) for number in (2, 3, 4))))
    await settle()
    service.gate.set()
    assert await first == 2
    assert await rest == [4, 6, 8]
    assert service.calls == [[1], [2, 3], [4]]  # capped at max_batch


async def test_a_caller_that_goes_away_leaves_the_others_their_answers() -> None:
    service = Doubler()
    batcher = CallBatcher(service.call, failure)
    service.gate.clear()
    leaving = asyncio.ensure_future(batcher.call(1))
    staying = asyncio.ensure_future(batcher.call(2))
    await settle()
    leaving.cancel()
    service.gate.set()
    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_a_lone_call_never_lingers_and_a_busy_batch_lingers_for_company() -> None:
    service = Doubler()
    batcher = CallBatcher(service.call, failure, linger=Linger(60.0, enough=3, siblings=2))
    assert await asyncio.wait_for(batcher.call(1), 5) == 2

    service.gate.clear()
    first = asyncio.ensure_future(batcher.call(1))
    await settle()
    waiting = [asyncio.ensure_future(batcher.call(number)) for number in (2, 3)]
    await settle()
    assert service.calls == [[1], [1]]  # two waiting, one in flight: the next batch lingers
    waiting.append(asyncio.ensure_future(batcher.call(4)))
    await settle()
    assert service.calls == [[1], [1], [2, 3, 4]]
    service.gate.set()
    assert await first == 2
    assert [await call for call in waiting] == [4, 6, 8]


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        CallBatcher(Doubler().call, failure, max_batch=0)
