"""HTTP endpoint of the change feed (internal: the gateway's webhook dispatcher reads it)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import Provide
from litestar.params import Parameter
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.changes.repository import ChangeRepository
from services.consent.changes.schemas import DEFAULT_LIMIT, MAX_LIMIT, ChangePage
from services.consent.changes.service import ChangeFeed
from tillit.problems import problem_responses

__all__ = ["ChangeController"]


def provide_change_feed(session: AsyncSession) -> ChangeFeed:
    return ChangeFeed(ChangeRepository(session))


class ChangeController(Controller):
    path = "/v1/changes"
    tags = ["changes"]
    dependencies = {"feed": Provide(provide_change_feed, sync_to_thread=False)}

    @get(
        "/",
        summary="Consents that became withdrawn, refused or expired, and erased subjects, in feed order",
        description=(
            "Positions only grow and have no gaps; remember the last one handled and ask with after= it. "
            "Reading gives positions to changes committed since the last read, so it is a write."
        ),
        responses=problem_responses(400, 401),
    )
    async def changes(
        self,
        feed: ChangeFeed,
        after: Annotated[int, Parameter(ge=0, le=2**53 - 1, description="Last position already handled")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> ChangePage:
        return await feed.read(after, limit)
