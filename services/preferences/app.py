"""The preferences service's Litestar application (``tillit serve preferences``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Litestar

from services.preferences.api import (
    PROFILE_BATCH,
    PROFILE_READS,
    ProfileBatchController,
    ProfileController,
    StatsController,
    SubjectDataController,
)
from services.preferences.quizzes.api import QUIZ_CONTROLLERS, load_stored_quizzes
from services.preferences.quizzes.definitions import QUIZ_DIR
from services.preferences.quizzes.purge import session_purger
from services.preferences.quizzes.service import QuizCatalogue, session_lifetime
from services.preferences.service import BatchedProfileReads, check_fields_declared
from tillit.app import create_internal_service, postgres_state
from tillit.fast_path import install_fast_batch_reads
from tillit.policy import Policy
from tillit.settings import Settings

__all__ = ["MIGRATIONS", "create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app() -> Litestar:
    state: dict[str, Any] = {"quiz_session_lifetime": session_lifetime()}

    def check_policy(policy: Policy) -> None:
        """The profile fields, then the quiz files: a bad quiz stops start-up with its ``QuizError``."""
        check_fields_declared(policy)
        state["quizzes"] = QuizCatalogue.from_files(QUIZ_DIR, policy)

    def quiz_state(_settings: Settings) -> dict[str, Any]:
        return state

    start_reads, stop_reads = postgres_state(PROFILE_READS, BatchedProfileReads)

    app = create_internal_service(
        "preferences",
        title="tillit preferences service",
        description=(
            "Preference profiles (zero-party data), each value with its provenance and change history; quizzes "
            "whose answers become profile traits, with anonymous analytics; per-subject export and erasure."
        ),
        route_handlers=[
            ProfileController,
            ProfileBatchController,
            SubjectDataController,
            StatsController,
            *QUIZ_CONTROLLERS,
        ],
        migrations=MIGRATIONS,
        check_policy=check_policy,
        state=quiz_state,
        on_startup=[load_stored_quizzes, start_reads],
        on_shutdown=[stop_reads],
        background=lambda settings: session_purger(settings.expiry_sweep_seconds),
    )
    # The gateway's batched profile reads, in their common form, before Litestar's per-request
    # machinery (tillit.fast_path: about half of such a read's CPU); every other request as before.
    return install_fast_batch_reads(app, [PROFILE_BATCH])
