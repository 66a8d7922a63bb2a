"""Periodic work a service runs beside its requests (expiry sweeps, purges).

Each job runs in its own task; a failing round is logged and tried again next round, so one bad
row never stops the work for good. Several replicas may run the same job: jobs are written to be
safe when they race.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from litestar import Litestar

__all__ = ["PeriodicHooks", "periodic"]

PeriodicHooks = tuple[Callable[[Litestar], None], Callable[[Litestar], Awaitable[None]]]


def periodic(name: str, interval: float, job: Callable[[Litestar], Awaitable[int]]) -> PeriodicHooks:
    """Start and stop hooks that run ``job`` every ``interval`` seconds (0 disables it).

    ``job`` answers how many things it did; a non-zero count is logged at INFO.
    """
    log = logging.getLogger(f"tillit.background.{name}")
    tasks: list[asyncio.Task[None]] = []

    async def loop(app: Litestar) -> None:
        while True:
            try:
                done = await job(app)
                if done:
                    log.info("%s: %d done", name, done)
            except Exception:
                log.exception("%s failed; it will try again in %s s", name, interval)
            await asyncio.sleep(interval)

    def start(app: Litestar) -> None:
        if interval > 0:
            tasks.append(asyncio.get_running_loop().create_task(loop(app), name=name))

    async def stop(_: Litestar) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    return start, stop
