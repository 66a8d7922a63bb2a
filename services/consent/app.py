"""The consent service's Litestar application (``tillit serve consent``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from services.consent.api import ConsentController
from tillit.app import create_internal_service

__all__ = ["MIGRATIONS", "create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app() -> Litestar:
    return create_internal_service(
        "consent",
        title="tillit consent service",
        description="Consent ledger and the current consent state derived from it.",
        route_handlers=[ConsentController],
        migrations=MIGRATIONS,
    )
