"""Every kind of profile field: what is accepted (and how it is normalised), what is refused and how."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.preferences.schemas import PROFILE_FIELD_NAMES
from services.preferences.service import check_fields_declared
from services.preferences.tests.support import decode_patch, patch
from tillit.db import Database
from tillit.policy import load_policy
from tillit.problems import Unprocessable
from tillit.settings import REPO_ROOT

pytestmark = pytest.mark.anyio

ACCEPTED: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"email": "Astrid.Lind@EXAMPLE.com"}, {"email": "Astrid.Lind@example.com"}),
    ({"phone": "+46701234567"}, {"phone": "+46701234567"}),
    ({"first_name": "  Ástrid   Maria "}, {"first_name": "Ástrid Maria"}),
    ({"preferred_language": "et"}, {"preferred_language": "et"}),
    (
        {"sizes": {"tops": "S", "bottoms": 28, "dresses": 36, "outerwear": "M", "knitwear": "XL", "shoes": 38.5}},
        {"sizes": {"bottoms": 28, "dresses": 36, "knitwear": "XL", "outerwear": "M", "shoes": 38.5, "tops": "S"}},
    ),
    ({"sizes": {"bottoms": "XXL", "shoes": 16}}, {"sizes": {"bottoms": "XXL", "shoes": 16}}),
    ({"shoe_size": 44}, {"shoe_size": 44}),
    ({"clothing_size": "XS"}, {"clothing_size": "XS"}),
    (
        {"favourite_brands": ["Filippa K", "filippa k", " Acne  Studios "]},
        {"favourite_brands": ["Filippa K", "Acne Studios"]},
    ),
    ({"favourite_categories": ["jeans", "knitwear"]}, {"favourite_categories": ["jeans", "knitwear"]}),
    ({"topics": ["new-arrivals", "hållbarhet"]}, {"topics": ["new-arrivals", "hållbarhet"]}),
    ({"topics": []}, {"topics": []}),
    (
        {"price_range": {"min": 200, "max": 1500, "currency": "SEK"}},
        {"price_range": {"min": 200, "max": 1500, "currency": "SEK"}},
    ),
    (
        {"price_range": {"min": 50, "max": 50, "currency": "EUR"}},
        {"price_range": {"min": 50, "max": 50, "currency": "EUR"}},
    ),
    (
        {"contact_frequency": {"email": "weekly", "sms": "monthly"}},
        {"contact_frequency": {"email": "weekly", "sms": "monthly"}},
    ),
]


@pytest.mark.parametrize(
    ("fields", "stored"), ACCEPTED, ids=[str(sorted(f)) + str(i) for i, (f, _) in enumerate(ACCEPTED)]
)
async def test_a_valid_value_is_stored_normalised(
    database: Database, fields: dict[str, Any], stored: dict[str, Any]
) -> None:
    profile = await patch(database, "astrid", fields)
    assert profile.fields == stored


SCHEMA_REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"phone": "0701234567"}, "$.fields.phone"),
    ({"phone": "+4670 123 45 67"}, "$.fields.phone"),
    ({"email": "a" * 300 + "@example.com"}, "$.fields.email"),
    ({"first_name": ""}, "$.fields.first_name"),
    ({"first_name": "x" * 101}, "$.fields.first_name"),
    ({"first_name": "Astrid\nDROP"}, "$.fields.first_name"),
    ({"preferred_language": "de"}, "$.fields.preferred_language"),
    ({"sizes": {"tops": "XXXL"}}, "$.fields.sizes.tops"),
    ({"sizes": {"bottoms": 23}}, "$.fields.sizes.bottoms"),
    ({"sizes": {"bottoms": 45}}, "$.fields.sizes.bottoms"),
    ({"sizes": {"dresses": 37}}, "$.fields.sizes.dresses"),
    ({"sizes": {"dresses": 50}}, "$.fields.sizes.dresses"),
    ({"sizes": {"shoes": 38.3}}, "$.fields.sizes.shoes"),
    ({"sizes": {"shoes": 15.5}}, "$.fields.sizes.shoes"),
    ({"sizes": {"shoes": "38"}}, "$.fields.sizes.shoes"),
    ({"sizes": {"hats": "M"}}, "$.fields.sizes"),
    ({"shoe_size": 60}, "$.fields.shoe_size"),
    ({"clothing_size": "XXXL"}, "$.fields.clothing_size"),
    ({"favourite_brands": ["x"] * 21}, "$.fields.favourite_brands"),
    ({"favourite_brands": ["x" * 61]}, "$.fields.favourite_brands[0]"),
    ({"topics": [""]}, "$.fields.topics[0]"),
    ({"topics": "news"}, "$.fields.topics"),
    ({"price_range": {"min": 1, "max": 2}}, "$.fields.price_range"),
    ({"price_range": {"min": -1, "max": 2, "currency": "SEK"}}, "$.fields.price_range.min"),
    ({"price_range": {"min": 1, "max": 2, "currency": "XYZ"}}, "$.fields.price_range.currency"),
    ({"price_range": {"min": 1, "max": 10_000_001, "currency": "SEK"}}, "$.fields.price_range.max"),
    ({"contact_frequency": {"email": "hourly"}}, "$.fields.contact_frequency.email"),
    ({"contact_frequency": {"pigeon": "weekly"}}, "$.fields.contact_frequency"),
    ({"shoe_sizes": 38}, "$.fields"),
]


@pytest.mark.parametrize(("fields", "where"), SCHEMA_REFUSED, ids=[where for _, where in SCHEMA_REFUSED])
def test_a_value_outside_the_schema_is_refused_naming_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(msgspec.ValidationError) as refused:
        decode_patch({"fields": fields, "source": "preference_page"})
    assert where in str(refused.value)


def test_unknown_top_level_keys_and_bad_sources_are_refused() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `extra`"):
        decode_patch({"fields": {"topics": []}, "source": "preference_page", "extra": 1})
    with pytest.raises(msgspec.ValidationError, match=r"\$\.source"):
        decode_patch({"fields": {"topics": []}, "source": "Preference Page!"})


SEMANTICALLY_REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"email": "astrid@localhost"}, "fields.email", "invalid-email"),
    ({"email": "astrid@shop.invalid"}, "fields.email", "invalid-email"),
    ({"email": "no-at-sign"}, "fields.email", "invalid-email"),
    ({"first_name": "   "}, "fields.first_name", "blank-text"),
    ({"topics": ["news", "  "]}, "fields.topics[1]", "blank-text"),
    ({"price_range": {"min": 900, "max": 100, "currency": "NOK"}}, "fields.price_range", "invalid-price-range"),
    ({}, "", "empty-patch"),
]


@pytest.mark.parametrize(("fields", "where", "slug"), SEMANTICALLY_REFUSED, ids=[s for _, _, s in SEMANTICALLY_REFUSED])
async def test_a_schema_valid_value_the_service_cannot_accept_is_a_422_naming_the_field(
    database: Database, fields: dict[str, Any], where: str, slug: str
) -> None:
    with pytest.raises(Unprocessable) as refused:
        await patch(database, "astrid", fields)
    assert refused.value.slug == slug
    assert refused.value.detail.startswith(where)


def test_every_profile_field_is_declared_in_the_policy() -> None:
    policy = load_policy(REPO_ROOT / "policies")
    check_fields_declared(policy)
    assert set(PROFILE_FIELD_NAMES) <= set(policy.fields)


def test_the_service_refuses_to_start_without_a_field_or_channel_in_the_policy() -> None:
    policy = load_policy(REPO_ROOT / "policies")
    without_sizes = msgspec.structs.replace(policy, fields={k: v for k, v in policy.fields.items() if k != "sizes"})
    with pytest.raises(RuntimeError, match="sizes"):
        check_fields_declared(without_sizes)
    without_sms = msgspec.structs.replace(policy, channels={k: v for k, v in policy.channels.items() if k != "sms"})
    with pytest.raises(RuntimeError, match="sms"):
        check_fields_declared(without_sms)
