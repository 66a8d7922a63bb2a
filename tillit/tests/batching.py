"""What the batcher tests share: a batch's failure as each caller gets it, and letting queued tasks run."""

from __future__ import annotations

import asyncio

from tillit.problems import Unavailable

__all__ = ["failure", "settle"]


def failure(exc: BaseException) -> BaseException:
    """The batchers' ``failure``: a 503 of its own for each caller, caused by ``exc``."""
    problem = Unavailable("the service could not answer", slug="service-unavailable")
    problem.__cause__ = exc
    return problem


async def settle() -> None:
    """Let every task that can run now run until it waits."""
    for _ in range(5):
        await asyncio.sleep(0)
