"""Batched reads (tillit.read_batch): batching, no stale answer, fail closed, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from tillit.problems import Unavailable
from tillit.read_batch import Linger, ReadBatcher
from tillit.tests.batching import failure, settle

pytestmark = pytest.mark.anyio


class Store:
    """A service whose fetch reads its values when called, then answers once let through."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failure: BaseException | None = None

    async def fetch(self, keys: list[str]) -> Mapping[str, str]:
        self.calls.append(keys)
        snapshot = {key: self.values[key] for key in keys if key in self.values}  # read when sent
        await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return snapshot


async def test_reads_that_arrive_together_share_one_fetch_and_repeated_keys_are_asked_once() -> None:
    store = Store({"a": "A", "b": "B"})
    batcher = ReadBatcher(store.fetch, failure)
    answers = await asyncio.gather(batcher.get("a"), batcher.get("b"), batcher.get("a"), batcher.get("nobody"))
    assert answers == ["A", "B", "A", None]
    assert store.calls == [["a", "b", "nobody"]]


async def test_a_read_never_joins_a_batch_sent_before_it_arrived() -> None:
    """A withdrawal committed while a batch is in flight is seen by every read that starts after it."""
    store = Store({"astrid": "given"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=1)
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    assert store.calls == [["astrid"]]  # sent, not answered yet

    store.values["astrid"] = "withdrawn"  # committed before the next release starts
    second = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    assert store.calls == [["astrid"]]  # waits for the batch in flight instead of joining it
    store.gate.set()
    assert await first == "given"
    assert await second == "withdrawn"
    assert store.calls == [["astrid"], ["astrid"]]


async def test_with_two_batches_in_flight_a_new_read_goes_out_at_once_in_its_own_batch() -> None:
    store = Store({"astrid": "given"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=2)
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    store.values["astrid"] = "withdrawn"
    second = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    assert store.calls == [["astrid"], ["astrid"]]
    store.gate.set()
    assert (await first, await second) == ("given", "withdrawn")


async def test_reads_queued_while_a_batch_is_in_flight_go_out_together_next() -> None:
    store = Store({key: key.upper() for key in "abcde"})
    batcher = ReadBatcher(store.fetch, failure, max_batch=2, max_in_flight=1)
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("a"))
    await settle()
    rest = asyncio.ensure_future(asyncio.gather(*(batcher.get(key) for key in "bcde")))
    await settle()
    store.gate.set()
    assert await first == "A"
    assert await rest == ["B", "C", "D", "E"]
    assert store.calls == [["a"], ["b", "c"], ["d", "e"]]  # capped at max_batch


@pytest.mark.parametrize("error", [Unavailable("down", slug="store-unavailable"), RuntimeError("undecodable")])
async def test_a_failed_batch_fails_every_read_in_it_with_its_own_503(error: Exception) -> None:
    store = Store({"a": "A", "b": "B"})
    store.failure = error
    batcher = ReadBatcher(store.fetch, failure)
    outcomes = await asyncio.gather(batcher.get("a"), batcher.get("b"), return_exceptions=True)
    assert all(isinstance(outcome, Unavailable) for outcome in outcomes)
    assert outcomes[0] is not outcomes[1]
    assert all(outcome.__cause__ is error for outcome in outcomes)  # type: ignore[union-attr]
    store.failure = None
    assert await batcher.get("a") == "A"  # the next batch is unaffected


async def test_a_caller_that_goes_away_does_not_break_the_batch_for_the_others() -> None:
    store = Store({"a": "A", "b": "B"})
    batcher = ReadBatcher(store.fetch, failure)
    store.gate.clear()
    leaving = asyncio.ensure_future(batcher.get("a"))
    staying = asyncio.ensure_future(batcher.get("b"))
    await settle()
    leaving.cancel()
    await settle()
    store.gate.set()
    assert await staying == "B"
    assert leaving.cancelled()


async def test_a_caller_cancelled_before_its_batch_is_sent_is_left_out() -> None:
    store = Store({"a": "A", "b": "B", "c": "C"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=1)
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("a"))
    await settle()
    leaving = asyncio.ensure_future(batcher.get("b"))
    staying = asyncio.ensure_future(batcher.get("c"))
    await settle()
    leaving.cancel()
    await settle()
    store.gate.set()
    assert (await first, await staying) == ("A", "C")
    assert store.calls == [["a"], ["c"]]


async def test_close_lets_the_batches_in_flight_answer() -> None:
    store = Store({"a": "A"})
    batcher = ReadBatcher(store.fetch, failure)
    store.gate.clear()
    waiting = asyncio.ensure_future(batcher.get("a"))
    await settle()
    closing = asyncio.ensure_future(batcher.close())
    await settle()
    assert not closing.done()
    store.gate.set()
    await closing
    assert await waiting == "A"


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        ReadBatcher(Store({}).fetch, failure, max_batch=0)


@pytest.mark.parametrize("in_flight", [1, 2])
async def test_a_read_queued_just_as_the_last_batch_finishes_is_still_sent(in_flight: int) -> None:
    """A read submitted after a batch answered but before its sender was forgotten must not wait for
    another read to come along (on a quiet gateway it would wait for ever)."""
    store = Store({"a": "A", "b": "B"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=in_flight)
    readers = [batcher.submit("a") for _ in range(in_flight)]
    if in_flight == 2:
        await settle()
        readers.append(batcher.submit("a"))  # the second sender, so that both are busy
    assert await readers[-1] == "A"  # woken before the sender's done-callback runs
    late = batcher.submit("b")
    assert await asyncio.wait_for(late, 2) == "B"


async def test_a_lone_read_never_lingers() -> None:
    """A quiet gateway answers at once: the linger is only for a batch that others are waiting on."""
    store = Store({"a": "A"})
    batcher = ReadBatcher(store.fetch, failure, linger=Linger(60.0, enough=8))
    assert await asyncio.wait_for(batcher.get("a"), 5) == "A"
    assert store.calls == [["a"]]


async def test_with_others_waiting_a_batch_lingers_until_enough_reads_joined_it() -> None:
    store = Store({key: key.upper() for key in "abcdef"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=2, linger=Linger(60.0, enough=4, siblings=2))
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("a"))
    await settle()
    assert store.calls == [["a"]]  # alone: sent at once, and now in flight
    waiting = [asyncio.ensure_future(batcher.get(key)) for key in "bc"]
    await settle()
    assert store.calls == [["a"]]  # "b" found two others waiting: its batch lingers
    waiting += [asyncio.ensure_future(batcher.get(key)) for key in "de"]
    await settle()
    assert store.calls == [["a"], ["b", "c", "d", "e"]]  # left once four were queued, long before 60 s
    store.gate.set()
    assert await first == "A"
    assert [await read for read in waiting] == ["B", "C", "D", "E"]


async def test_a_lingering_batch_leaves_after_the_linger_with_what_it_has() -> None:
    store = Store({key: key.upper() for key in "abc"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=2, linger=Linger(0.05, enough=100, siblings=1))
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("a"))
    await settle()
    rest = asyncio.ensure_future(asyncio.gather(batcher.get("b"), batcher.get("c")))
    await settle()
    assert store.calls == [["a"]]
    store.gate.set()
    assert await first == "A"
    assert await asyncio.wait_for(rest, 5) == ["B", "C"]
    assert store.calls == [["a"], ["b", "c"]]


async def test_a_lingering_batch_still_never_holds_a_read_that_arrived_after_it_was_sent() -> None:
    """The linger only delays when a batch leaves; what it read is still read after every key in it arrived."""
    store = Store({"astrid": "given", "bo": "given", "cy": "given"})
    batcher = ReadBatcher(store.fetch, failure, max_in_flight=2, linger=Linger(60.0, enough=3, siblings=1))
    store.gate.clear()
    first = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    lingering = [asyncio.ensure_future(batcher.get(key)) for key in ("bo", "cy")]
    await settle()
    store.values["astrid"] = "withdrawn"  # acknowledged while that batch lingers
    late = asyncio.ensure_future(batcher.get("astrid"))
    await settle()
    assert store.calls == [["astrid"], ["bo", "cy", "astrid"]]
    store.gate.set()
    assert await first == "given"
    assert await late == "withdrawn"
    assert [await read for read in lingering] == ["given", "given"]


@pytest.mark.parametrize(("seconds", "enough", "siblings"), [(-1, 1, 1), (0.01, 0, 1), (0.01, 1, 0)])
def test_a_negative_linger_or_bounds_below_one_are_refused(seconds: float, enough: int, siblings: int) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        Linger(seconds, enough=enough, siblings=siblings)
