"""The rules service's Litestar application (``tillit serve rules``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from services.rules.api import SegmentController
from tillit.app import create_internal_service

__all__ = ["create_app"]


def create_app() -> Litestar:
    return create_internal_service(
        "rules",
        title="tillit rules service",
        description="Segment definitions checked against the release policy; stores no personal data.",
        route_handlers=[SegmentController],
        migrations=Path(__file__).parent / "migrations",
    )
