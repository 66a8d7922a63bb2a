"""The rules service's Litestar application (``tillit serve rules``)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

from litestar import Litestar

from services.rules.api import CatalogueController, DefinitionController, ExperimentController, SegmentController
from services.rules.catalogue import demo_catalogue
from services.rules.engine import Engine
from services.rules.exposures import ExposureCounter
from services.rules.fast_decide import FastDecide
from services.rules.loader import definitions_dir, load_definitions
from services.rules.repository import DefinitionRepository
from services.rules.service import RulesService
from tillit.app import create_internal_service
from tillit.policy import Policy
from tillit.settings import Settings

__all__ = ["create_app"]


def _state(_: Settings) -> dict[str, Any]:
    catalogue = demo_catalogue()
    exposures = ExposureCounter()
    return {"catalogue": catalogue, "exposures": exposures, "engine": Engine(catalogue, exposures)}


async def _load_definitions(app: Litestar) -> None:
    await load_definitions(app.state.database, app.state.policy, app.state.engine, definitions_dir())


def _background(_: Settings) -> tuple[Any, Any]:
    def start(app: Litestar) -> None:
        app.state.exposures.start(app.state.database)

    async def stop(app: Litestar) -> None:
        await app.state.exposures.stop(app.state.database)

    return start, stop


async def _recheck(app: Litestar, policy: Policy) -> None:
    """On a policy reload: definitions that became invalid are disabled (and logged) before it is in force."""
    database = app.state.database
    async with database.write_turns or nullcontext(), database.sessionmaker() as session, session.begin():
        await RulesService(DefinitionRepository(session), policy, app.state.engine).recheck(policy)


def create_app() -> Litestar:
    app = create_internal_service(
        "rules",
        title="tillit rules service",
        description=(
            "Segments, merchandising rules and content slots checked against the release policy, and "
            "decisions on profiles the gateway already filtered; stores definitions and aggregate counts, "
            "no personal data."
        ),
        route_handlers=[SegmentController, DefinitionController, ExperimentController, CatalogueController],
        migrations=Path(__file__).parent / "migrations",
        state=_state,
        background=_background,
        on_startup=[_load_definitions],
        policy_checks=[_recheck],
    )
    # The common decision before Litestar's per-request machinery (services.rules.fast_decide: about
    # a third of the worker's CPU per decision); every other request goes on as before.
    app.asgi_handler = FastDecide(app, app.asgi_handler)
    return app
