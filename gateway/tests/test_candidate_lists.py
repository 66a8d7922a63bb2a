"""Known candidate lists: their digest remembered, a body read around them exactly as read whole."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgspec
import pytest

from bench.decisions import candidates
from gateway.candidate_lists import KnownLists, decode_around_known_list
from gateway.decisions import DecisionBody

DECODER = msgspec.json.Decoder(DecisionBody, strict=True)
LIST = msgspec.json.encode(candidates(random.Random(1)))  # noqa: S311 - reproducible test data
OTHER = msgspec.json.encode(candidates(random.Random(2)))  # noqa: S311 - reproducible test data
CONTEXT = b'{"page": "home", "visit_count": 2}'


def known(*lists: bytes) -> KnownLists:
    held = KnownLists()
    for candidates_json in lists:
        held.digest(candidates_json)
    return held


def whole(body: bytes) -> DecisionBody | None:
    try:
        return DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None


def test_a_digest_is_computed_once_per_list_and_is_its_sha256() -> None:
    held = KnownLists()
    assert held.digest(LIST) == hashlib.sha256(LIST).hexdigest()
    assert held.digest(msgspec.Raw(LIST)) == hashlib.sha256(LIST).hexdigest()  # as decoded: found again
    assert len(held) == 1
    assert held.digest(b"[]") == hashlib.sha256(b"[]").hexdigest()
    assert len(held) == 1  # a short list is hashed again each time: cheaper than keeping it


def test_known_lists_are_bounded_in_entries_and_bytes() -> None:
    rng = random.Random(3)  # noqa: S311 - reproducible test data
    lists = [msgspec.json.encode(candidates(random.Random(rng.random()))) for _ in range(5)]  # noqa: S311
    held = KnownLists(entries=3)
    for candidates_json in lists:
        held.digest(candidates_json)
    assert len(held) == 3
    assert held.at(b'{"candidates": ' + lists[0] + b"}", 15) is None  # the oldest, forgotten
    assert held.at(b'{"candidates": ' + lists[4] + b"}", 15) == lists[4]
    small = KnownLists(max_bytes=len(LIST) * 4)
    for candidates_json in (LIST, OTHER, *lists):
        small.digest(candidates_json)
    assert sum(len(candidates_json) for candidates_json in small._lists) <= len(LIST) * 4


GOOD = [
    b'{"context": ' + CONTEXT + b', "slots": ["home.hero"], "limit": 24, "candidates": ' + LIST + b"}",
    b'{"candidates": ' + LIST + b', "context": ' + CONTEXT + b"}",
    b'{ "candidates" :\n\t' + LIST + b" \n}",
    b'{"limit": 3, "candidates":' + LIST + b', "slots": []}',
]
ODD = [
    # read whole: a second candidates key, the word as a value, escapes, nesting, other JSON
    b'{"candidates": ' + LIST + b', "candidates": null}',
    b'{"candidates": null, "candidates": ' + LIST + b"}",
    b'{"candidates": ' + OTHER + b', "candidates": ' + LIST + b"}",
    b'{"context": {"page": "candidates"}, "candidates": ' + LIST + b"}",
    b'{"candid\\u0061tes": null, "candidates": ' + LIST + b"}",
    b'{"candidates": ' + LIST + b', "context": {"product_brand": "A\\"B"}}',
    b'{"context": {"candidates": ' + LIST + b"}}",
    b'{"candidates": [' + LIST + b"]}",
    b'{"candidates": ' + LIST + b"0}",
    b'{"candidates": ' + LIST + b', "limit": 3.0}',
    b'{"candidates": ' + LIST + b', "unknown": 1}',
    b'{"candidates": ' + LIST[:-1] + b"}",
    b'{"candidates": ' + LIST[:-1] + b', {"id": "x"}]}',
    b'["candidates", ' + LIST + b"]",
    b'{"candidates" ' + LIST + b"}",
    b'{"candidates": ' + OTHER + b"}",
]


@pytest.mark.parametrize("body", GOOD)
def test_a_body_with_a_known_list_is_read_around_it_as_it_is_read_whole(body: bytes) -> None:
    around = decode_around_known_list(body, known(LIST), DECODER)
    assert around is not None
    assert around == whole(body)
    assert bytes(around.candidates) == LIST


@pytest.mark.parametrize("body", ODD)
def test_any_other_body_is_left_to_the_whole_decode_or_read_as_it(body: bytes) -> None:
    around = decode_around_known_list(body, known(LIST), DECODER)
    assert around is None or around == whole(body)


def test_random_edits_never_read_a_body_otherwise_than_the_whole_decode() -> None:
    """Bytes inserted, deleted or changed anywhere (the list included): the shortcut answers the
    whole decode's value or nothing, never another value and never one the whole decode refuses."""
    rng = random.Random(20261125)  # noqa: S311 - reproducible test data
    held = known(LIST, OTHER)
    alphabet = list(b' \t\n{}[]:,"\\0123456789.-eEnulltrueacdis')
    taken = 0
    for number in range(3000):
        body = bytearray(GOOD[number % len(GOOD)])
        start = bytes(body).find(LIST)
        outside = [*range(start), *range(start + len(LIST), len(body))]
        for _ in range(rng.randrange(1, 4)):
            spot = rng.choice(outside) if rng.random() < 0.8 else rng.randrange(len(body))
            spot = min(spot, len(body) - 1)
            edit = rng.randrange(3)
            if edit == 0:
                body.insert(spot, rng.choice(alphabet))
            elif edit == 1:
                del body[spot]
            else:
                body[spot] = rng.choice(alphabet)
        around = decode_around_known_list(bytes(body), held, DECODER)
        if around is not None:
            taken += 1
            expected: Any = whole(bytes(body))
            assert expected is not None, bytes(body)
            assert around == expected
    assert taken > 50  # edits outside the list that leave the body valid still take the shortcut
