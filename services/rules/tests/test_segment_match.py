"""Matching one segment against a page of already-filtered profiles (audiences with ``segment=``)."""

from __future__ import annotations

import msgspec
import pytest

from services.rules.schemas import SegmentIn, SegmentMatchRequest
from services.rules.tests.support import Rules, leaf, segment
from tillit.problems import Conflict, NotFound, Unprocessable

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"


async def test_the_positions_of_matching_profiles_come_back(rules: Rules) -> None:
    flat = msgspec.convert(
        {
            "key": "jeans-lovers",
            "title": "Jeans lovers",
            "purpose": EMAIL,
            "conditions": [{"field": "favourite_categories", "op": "contains", "value": "jeans"}],
        },
        SegmentIn,
    )
    created = await rules.call(lambda service: service.create_segment(flat))
    assert msgspec.to_builtins(created.when) == {"all": [leaf("profile.favourite_categories", "contains", "jeans")]}
    with pytest.raises(Conflict):
        await rules.call(lambda service: service.create_segment(flat))
    profiles = [
        {"favourite_categories": ["jeans", "knitwear"]},
        {"favourite_categories": ["dresses"]},
        {"email": "x@example.com"},  # the field was withheld: unknown, never matches
        {"favourite_categories": ["jeans"]},
    ]
    request = SegmentMatchRequest(purpose=EMAIL, profiles=profiles)
    result = await rules.call(lambda service: service.match("jeans-lovers", request))
    assert (result.segment, result.matches) == ("jeans-lovers", [0, 3])

    with pytest.raises(NotFound):
        await rules.call(lambda service: service.match("nobody", request))
    other = SegmentMatchRequest(purpose="personalize.content.profiled", profiles=[])
    with pytest.raises(Unprocessable):
        await rules.call(lambda service: service.match("jeans-lovers", other))


async def test_a_segment_of_segments_matches_through_its_references(rules: Rules) -> None:
    await rules.save(
        segment("likes-jeans", leaf("profile.favourite_categories", "contains", "jeans"), EMAIL),
        segment("not-jeans", {"not": {"segment": "likes-jeans"}}, EMAIL),
    )
    request = SegmentMatchRequest(EMAIL, [{"favourite_categories": ["jeans"]}, {"favourite_categories": []}, {}])
    result = await rules.call(lambda service: service.match("not-jeans", request))
    assert result.matches == [1]  # the withheld one is unknown under `not` too
