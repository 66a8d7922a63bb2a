"""The preferences form becomes exactly the profile change the shopper made, and nothing else."""

from __future__ import annotations

import pytest
from litestar.datastructures import FormMultiDict

from preference_center.controllers.preferences import FormProblem, changed_fields, form_to_fields


def form(**values: str | list[str]) -> FormMultiDict:
    items: list[tuple[str, str]] = []
    for key, value in values.items():
        items.extend((key, item) for item in (value if isinstance(value, list) else [value]))
    return FormMultiDict(items)


def test_the_form_maps_to_profile_fields_and_empty_inputs_clear() -> None:
    fields = form_to_fields(
        form(
            size_tops="M",
            size_bottoms="32",
            size_shoes="39,5",
            categories=["jeans", "jeans", "knitwear"],
            brands=" Filippa K ,, Acne  Studios ",
            price_min="300",
            price_max="2 500",
            currency="SEK",
            frequency_email="weekly",
            preferred_language="sv",
        )
    )
    assert fields["sizes"] == {
        "tops": "M",
        "bottoms": 32,
        "dresses": None,
        "outerwear": None,
        "knitwear": None,
        "shoes": 39.5,
    }
    assert fields["favourite_categories"] == ["jeans", "knitwear"]
    assert fields["favourite_brands"] == ["Filippa K", "Acne Studios"]
    assert fields["price_range"] == {"min": 300, "max": 2500, "currency": "SEK"}
    assert fields["contact_frequency"] == {"email": "weekly", "sms": None}
    assert fields["topics"] is None


@pytest.mark.parametrize(
    "values",
    [{"frequency_sms": "never"}, {"price_min": "lots", "currency": "SEK"}, {"price_min": "5", "currency": "BTC"}],
)
def test_values_the_form_cannot_send_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(FormProblem):
        form_to_fields(form(**values))


def test_only_what_changed_is_sent() -> None:
    current = {"sizes": {"tops": "M", "shoes": 39.5}, "favourite_brands": ["Acne"], "preferred_language": "sv"}
    wanted = form_to_fields(form(size_tops="L", size_shoes="39.5", brands="Acne", preferred_language="sv"))
    assert changed_fields(current, wanted) == {"sizes": {"tops": "L"}}
