"""A list pattern accepts and refuses exactly what msgspec's own pattern check does, item by item."""

from __future__ import annotations

import random
from typing import Annotated

import msgspec
import pytest

from tillit.list_patterns import ListPattern
from tillit.patterns import exact

PATTERN = exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ONE = Annotated[str, msgspec.Meta(pattern=PATTERN)]
PIECES = ("a", "Z", "9", ".", "_", ":", "-", "\n", "\x00", "é", " ", "$", "ab" * 20)


def _msgspec_refusal(value: str) -> str | None:
    try:
        msgspec.convert(value, ONE)
    except msgspec.ValidationError as exc:
        return str(exc)
    return None


def test_each_value_is_held_to_the_pattern_as_msgspec_holds_it() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    listed = ListPattern(PATTERN)
    for _ in range(3_000):
        value = "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 6)))
        refusal = _msgspec_refusal(value)
        assert _list_refusal(listed, ["ok", value, "fine"]) == (None if refusal is None else f"{refusal} - at `$[1]`")


def _list_refusal(listed: ListPattern, values: list[str]) -> str | None:
    try:
        listed.check(values, "$[{}]".format)
    except ValueError as exc:
        return str(exc)
    return None


def test_the_first_value_that_fails_is_named() -> None:
    listed = ListPattern(PATTERN)
    listed.check([], "$[{}]".format)
    listed.check(["a", "b", "c" * 64], "$[{}]".format)
    with pytest.raises(ValueError, match=r"at `\$\[1\]`$"):
        listed.check(["a", "b\n", "c"], "$[{}]".format)  # Python's $ alone would let the newline through
    with pytest.raises(ValueError, match=r"at `\$\.ids\[2\]`$"):
        listed.check(["a", "b", "-c", "d\x00e", ""], "$.ids[{}]".format)
    # A value holding the separator the whole list is joined with is still one (bad) value.
    with pytest.raises(ValueError, match=r"at `\$\[0\]`$"):
        listed.check(["a\x00b"], "$[{}]".format)


def test_the_published_schema_keeps_the_pattern() -> None:
    class Item(msgspec.Struct):
        id: Annotated[str, ListPattern(PATTERN).meta]

    assert msgspec.json.schema(Item)["$defs"]["Item"]["properties"]["id"] == {
        "type": "string",
        "pattern": PATTERN,
    }
    for loose in ("[a-z]+", "^[a-z]+$"):
        with pytest.raises(ValueError, match="exact"):
            ListPattern(loose)
