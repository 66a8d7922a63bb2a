"""Matching one segment against a page of already-filtered profiles (audiences with ``segment=``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec
import pytest

from services.rules.repository import SegmentRepository
from services.rules.schemas import SegmentIn, SegmentMatchRequest
from services.rules.service import SegmentService
from tillit.db import Database
from tillit.policy import load_policy
from tillit.problems import NotFound, Unprocessable
from tillit.settings import REPO_ROOT
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio
T = TypeVar("T")

MIGRATIONS = REPO_ROOT / "services" / "rules" / "migrations"
EMAIL = "marketing.communications.email"
POLICY = load_policy(REPO_ROOT / "policies")


@pytest.fixture(params=BACKENDS)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_database(request.param, tmp_path, MIGRATIONS) as database:
        yield database


async def _service_call(database: Database, call: Callable[[SegmentService], Awaitable[T]]) -> T:
    async with database.sessionmaker() as session, session.begin():
        return await call(SegmentService(SegmentRepository(session), POLICY))


async def test_the_positions_of_matching_profiles_come_back(database: Database) -> None:
    segment = msgspec.convert(
        {
            "key": "jeans-lovers",
            "title": "Jeans lovers",
            "purpose": EMAIL,
            "conditions": [{"field": "favourite_categories", "op": "contains", "value": "jeans"}],
        },
        SegmentIn,
    )
    await _service_call(database, lambda service: service.create(segment))
    profiles = [
        {"favourite_categories": ["jeans", "knitwear"]},
        {"favourite_categories": ["dresses"]},
        {"email": "x@example.com"},  # the field was withheld: unknown, never matches
        {"favourite_categories": ["jeans"]},
    ]
    request = SegmentMatchRequest(purpose=EMAIL, profiles=profiles)
    result = await _service_call(database, lambda service: service.match("jeans-lovers", request))
    assert (result.segment, result.matches) == ("jeans-lovers", [0, 3])

    with pytest.raises(NotFound):
        await _service_call(database, lambda service: service.match("nobody", request))
    other = SegmentMatchRequest(purpose="personalize.content.profiled", profiles=[])
    with pytest.raises(Unprocessable):
        await _service_call(database, lambda service: service.match("jeans-lovers", other))
