"""Definitions kept as YAML in the repository, saved when the service starts.

Every ``*.yaml`` in ``TILLIT_RULES_DEFINITIONS_DIR`` (default: ``services/rules/definitions/``;
empty: none) holds ``definitions: [...]``, each in the same shape as ``POST /v1/definitions``. On
start each one is saved like an API call: checked against the policy, stored as a new version only
when it differs from the latest. A definition that does not pass is logged with its file and
problem and skipped — the others still load, and the service starts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Final

import msgspec
import yaml

from services.rules.definitions import Definition
from services.rules.engine import Engine
from services.rules.repository import DefinitionRepository
from services.rules.service import RulesService
from tillit.db import Database
from tillit.policy import Policy
from tillit.problems import TillitError

__all__ = ["DEFAULT_DIR", "DefinitionFile", "definitions_dir", "load_definitions", "read_definitions"]

DEFAULT_DIR: Final = Path(__file__).parent / "definitions"
_log = logging.getLogger("tillit.rules")


class DefinitionFile(msgspec.Struct, forbid_unknown_fields=True):
    definitions: list[Definition]


def definitions_dir() -> Path | None:
    configured = os.environ.get("TILLIT_RULES_DEFINITIONS_DIR")
    if configured is None:
        return DEFAULT_DIR
    return Path(configured) if configured.strip() else None


def read_definitions(directory: Path) -> list[tuple[Path, Definition]]:
    """Every definition of every file, in file order; a file that does not parse is logged and skipped."""
    found: list[tuple[Path, Definition]] = []
    for path in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        try:
            parsed = msgspec.convert(yaml.safe_load(path.read_text(encoding="utf-8")), DefinitionFile)
        except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
            _log.error("rules definitions %s not loaded: %s", path, exc)
            continue
        found.extend((path, definition) for definition in parsed.definitions)
    return found


async def load_definitions(database: Database, policy: Policy, engine: Engine, directory: Path | None) -> int:
    """Save the repository's definitions, then check everything stored against ``policy``; how many are new."""
    new = 0
    found = await asyncio.to_thread(read_definitions, directory) if directory is not None else []
    for path, definition in found:
        try:
            async with database.write_turns or nullcontext(), database.sessionmaker() as session, session.begin():
                _, added = await RulesService(DefinitionRepository(session), policy, engine).save(definition)
                new += added
        except TillitError as exc:
            _log.error("%s: %s %r not loaded: %s", path, definition.__struct_config__.tag, definition.key, exc.detail)
    async with database.write_turns or nullcontext(), database.sessionmaker() as session, session.begin():
        await RulesService(DefinitionRepository(session), policy, engine).recheck(policy)
    return new
