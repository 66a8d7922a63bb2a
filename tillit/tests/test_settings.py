"""Process settings from the environment: the batch linger's default, override and bounds."""

from __future__ import annotations

import pytest

from tillit.settings import MAX_BATCH_LINGER_SECONDS, load_settings


def test_the_gateway_lingers_two_milliseconds_unless_told_otherwise() -> None:
    assert load_settings("gateway", {}).batch_linger_seconds == 0.002
    assert load_settings("gateway", {"TILLIT_BATCH_LINGER_SECONDS": "0"}).batch_linger_seconds == 0
    assert load_settings("gateway", {"TILLIT_BATCH_LINGER_SECONDS": "0.005"}).batch_linger_seconds == 0.005


@pytest.mark.parametrize("value", ["-0.001", str(MAX_BATCH_LINGER_SECONDS * 2), "soon"])
def test_a_linger_below_zero_above_the_bound_or_not_a_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"TILLIT_BATCH_LINGER_SECONDS|could not convert"):
        load_settings("gateway", {"TILLIT_BATCH_LINGER_SECONDS": value})
