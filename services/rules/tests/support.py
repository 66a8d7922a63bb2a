"""Builders for the rules service's tests: definitions as the API takes them, a service per call."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec

from services.rules.catalogue import demo_catalogue
from services.rules.definitions import Definition
from services.rules.engine import Engine
from services.rules.exposures import ExposureCounter
from services.rules.repository import DefinitionRepository
from services.rules.schemas import Decision, DecisionRequest, DefinitionOut
from services.rules.service import RulesService
from tillit.db import Database
from tillit.policy import Policy, load_policy
from tillit.settings import REPO_ROOT

__all__ = ["CATALOGUE", "MIGRATIONS", "POLICY", "PROFILED", "Rules", "definition", "leaf", "rule", "segment", "slot"]

T = TypeVar("T")
MIGRATIONS: Final = REPO_ROOT / "services" / "rules" / "migrations"
POLICY: Final = load_policy(REPO_ROOT / "policies")
PROFILED: Final = "personalize.content.profiled"
CATALOGUE: Final = demo_catalogue()


def leaf(field: str, op: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    node = {"field": field, "op": op, **extra}
    if value is not None:
        node["value"] = value
    return node


def segment(key: str, when: dict[str, Any], purpose: str = PROFILED) -> dict[str, Any]:
    return {"kind": "segment", "key": key, "title": key, "purpose": purpose, "when": when}


def rule(key: str, action: str, purpose: str = PROFILED, **fields: Any) -> dict[str, Any]:
    return {"kind": "rule", "key": key, "title": key, "purpose": purpose, "action": action, **fields}


def slot(key: str, default: str, purpose: str = PROFILED, **fields: Any) -> dict[str, Any]:
    return {"kind": "slot", "key": key, "title": key, "purpose": purpose, "default": default, **fields}


def definition(body: dict[str, Any]) -> Definition:
    return msgspec.convert(body, Definition)  # type: ignore[arg-type]


class Rules:
    """The rules service on a test database: one transaction per call, one engine throughout."""

    def __init__(self, database: Database, policy: Policy = POLICY) -> None:
        self.database = database
        self.policy = policy
        self.exposures = ExposureCounter()
        self.engine = Engine(CATALOGUE, self.exposures)

    async def call(self, action: Callable[[RulesService], Awaitable[T]]) -> T:
        async with self.database.sessionmaker() as session, session.begin():
            return await action(RulesService(DefinitionRepository(session), self.policy, self.engine))

    async def save(self, *bodies: dict[str, Any]) -> list[DefinitionOut]:
        saved = []
        for body in bodies:
            stored, _ = await self.call(lambda service, body=body: service.save(definition(body)))
            saved.append(stored)
        return saved

    async def decide(self, profile: dict[str, Any], purpose: str = PROFILED, **request: Any) -> Decision:
        decision = msgspec.convert({"purpose": purpose, "profile": profile, **request}, DecisionRequest)
        return await self.call(lambda service: service.decide(decision))
