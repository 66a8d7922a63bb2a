"""The preferences service's Litestar application (``tillit serve preferences``)."""

from __future__ import annotations

from pathlib import Path

from litestar import Litestar

from services.preferences.api import ProfileController, SubjectDataController
from services.preferences.service import check_fields_declared
from tillit.app import create_internal_service

__all__ = ["MIGRATIONS", "create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app() -> Litestar:
    return create_internal_service(
        "preferences",
        title="tillit preferences service",
        description=(
            "Preference profiles (zero-party data), each value with its provenance and change history; "
            "per-subject export and erasure."
        ),
        route_handlers=[ProfileController, SubjectDataController],
        migrations=MIGRATIONS,
        check_policy=check_fields_declared,
    )
