"""Fixtures of the cross-service suites: a real platform per database backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.platform import RunningPlatform, running_platform
from tillit.testing import BACKENDS, require_postgres


@pytest.fixture(scope="session", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """Every process of the platform, on SQLite files or on PostgreSQL schemas."""
    backend: str = request.param
    if backend == "postgres":
        require_postgres()
    with running_platform(backend, tmp_path_factory.mktemp(f"platform-{backend}")) as running:
        running.add_channel("email", ["profiles:read", "consents:write", "webhooks:manage", "audiences:read"])
        running.add_channel("sms", ["profiles:read"])
        running.add_channel("web", ["profiles:read", "decisions:read", "consents:write"])
        running.add_channel("ads", ["profiles:read", "audiences:read"])
        yield running
