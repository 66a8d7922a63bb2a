"""One log format for every process: ``time level component logger message``."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(component: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {component} %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Nothing per request: httpx logs every request at INFO, granian's access log is off (tillit.cli).
    for noisy in ("httpx", "httpcore", "aiohttp", "aiosqlite", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
