"""The rules service's decision: matched segments and a defined, otherwise empty answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from services.rules.repository import SegmentRepository
from services.rules.schemas import Decision, DecisionContext, DecisionRequest, SegmentIn
from services.rules.service import SegmentService
from tillit.db import Database
from tillit.policy import load_policy
from tillit.settings import REPO_ROOT
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
POLICY = load_policy(REPO_ROOT / "policies")
PROFILED = "personalize.content.profiled"


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


async def decide(database: Database, request: DecisionRequest) -> Decision:
    async with database.sessionmaker() as session, session.begin():
        return await SegmentService(SegmentRepository(session), POLICY).decide(request)


async def test_a_decision_names_the_matched_segments_and_is_otherwise_empty(database: Database) -> None:
    async with database.sessionmaker() as session, session.begin():
        service = SegmentService(SegmentRepository(session), POLICY)
        for key, category in (("dress-lovers", "dresses"), ("runners", "running")):
            segment = {
                "key": key,
                "title": key,
                "purpose": PROFILED,
                "conditions": [{"field": "favourite_categories", "op": "contains", "value": category}],
            }
            await service.create(msgspec.convert(segment, SegmentIn))
    context = DecisionContext(page="home", visit_count=3, slots=["hero"])
    matched = await decide(
        database, DecisionRequest(PROFILED, {"favourite_categories": ["dresses", "knitwear"]}, context)
    )
    assert msgspec.to_builtins(matched) == {
        "purpose": PROFILED,
        "segments": ["dress-lovers"],
        "variants": {},
        "products": [],
        "reasons": [],
    }
    # A field the gateway withheld is simply absent: no segment can match on it.
    assert (await decide(database, DecisionRequest(PROFILED, {}))).segments == []
    email = "marketing.communications.email"
    other = await decide(database, DecisionRequest(email, {"favourite_categories": ["dresses"]}))
    assert other.segments == []


@pytest.mark.parametrize(
    "context",
    [
        {"slots": ["x"] * 11},
        {"visit_count": -1},
        {"page": "Not A Page"},
        {"unknown": 1},
        {"days_since_last_visit": 40_000},
    ],
)
def test_the_context_is_small_and_bounded(context: dict[str, object]) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"purpose": PROFILED, "profile": {}, "context": context}, DecisionRequest, strict=True)
