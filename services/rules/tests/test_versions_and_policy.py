"""Definitions are versioned; a policy change re-checks them and disables what became invalid."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from services.rules.definitions import DefinitionRejected
from services.rules.tests.support import MIGRATIONS, POLICY, PROFILED, Rules, definition, leaf, rule, segment, slot
from tillit.db import Database
from tillit.migrations import _config
from tillit.policy import load_policy
from tillit.problems import Conflict
from tillit.settings import REPO_ROOT
from tillit.testing import BACKENDS, migrated_database

pytestmark = pytest.mark.anyio

JEANS = segment("jeans", leaf("profile.favourite_categories", "contains", "jeans"))
HIDE = rule("hide-full-price", "filter", when={"segment": "jeans"}, match=leaf("product.on_sale", "eq", False))
HERO = slot("home.hero", "editorial", variants=[{"key": "denim", "when": {"segment": "jeans"}}])
CANDIDATES = [
    {"id": "a", "brand": "Hope", "category": "jeans", "department": "womens", "price": 900},
    {"id": "b", "brand": "Hope", "category": "jeans", "department": "womens", "price": 450, "on_sale": True},
]


async def test_saving_makes_versions_and_the_same_body_changes_nothing(rules: Rules) -> None:
    [first] = await rules.save(JEANS)
    [same] = await rules.save(JEANS)
    assert (first.version, same.version) == (1, 1)
    [second] = await rules.save(segment("jeans", leaf("profile.favourite_categories", "contains_any", ["jeans"])))
    assert second.version == 2
    old = await rules.call(lambda service: service.get("segment", "jeans", 1))
    assert (old.version, old.latest, old.definition["when"]["op"]) == (1, False, "contains")
    listed = await rules.call(lambda service: service.list("segment", None, None))
    assert [(out.key, out.version) for out in listed] == [("jeans", 2)]
    with pytest.raises(Conflict):
        await rules.save(segment("jeans", leaf("profile.first_name", "eq", "Ada"), "marketing.communications.email"))


def _without_profile_data(tmp_path: Path) -> Path:
    """A copy of the policy in which personalisation may no longer use user.demographic.profile."""
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policy_dir)
    release = policy_dir / "release.yaml"
    edited = release.read_text().replace(
        "may_use: [user.demographic.profile, user.demographic.language]", "may_use: [user.demographic.language]"
    )
    assert edited != release.read_text()
    release.write_text(edited)
    return policy_dir


async def test_a_policy_change_disables_what_it_invalidates_and_nothing_disabled_runs(
    rules: Rules, tmp_path: Path
) -> None:
    await rules.save(JEANS, HIDE, HERO, segment("returning", leaf("context.visit_count", "gte", 2)))
    fan = {"favourite_categories": ["jeans"]}
    before = await rules.decide(fan, context={"visit_count": 3, "slots": ["home.hero"]}, candidates=CANDIDATES)
    assert (before.segments, before.variants, before.products) == (
        ["jeans", "returning"],
        {"home.hero": "denim"},
        ["b"],
    )

    rules.policy = load_policy(_without_profile_data(tmp_path))
    report = await rules.call(lambda service: service.recheck(rules.policy))
    assert set(report.disabled) == {"segment:jeans@1", "rule:hide-full-price@1", "slot:home.hero@1"}
    assert "'favourite_categories' (user.demographic.profile), which purpose" in report.disabled["segment:jeans@1"]
    assert "release.yaml:" in report.disabled["segment:jeans@1"]
    assert "no segment 'jeans'" in report.disabled["rule:hide-full-price@1"]
    disabled = await rules.call(lambda service: service.list(None, None, "disabled"))
    assert {(out.kind, out.key, out.status) for out in disabled} == {
        ("segment", "jeans", "disabled"),
        ("rule", "hide-full-price", "disabled"),
        ("slot", "home.hero", "disabled"),
    }
    assert all(out.problem for out in disabled)

    # Even a profile that still carried the field is not segmented on it, and no disabled rule runs.
    after = await rules.decide(fan, context={"visit_count": 3, "slots": ["home.hero"]}, candidates=CANDIDATES)
    assert (after.segments, after.variants, after.products) == (["returning"], {}, ["a", "b"])
    with pytest.raises(DefinitionRejected, match="may not use"):
        await rules.save(JEANS)

    rules.policy = POLICY
    again = await rules.call(lambda service: service.recheck(rules.policy))
    assert set(again.enabled) == set(report.disabled)
    restored = await rules.decide(fan, context={"visit_count": 3, "slots": ["home.hero"]}, candidates=CANDIDATES)
    assert restored == before


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_first_flat_segments_migrate_to_version_one(backend: str, tmp_path: Path) -> None:
    async with migrated_database(backend, tmp_path, MIGRATIONS) as database:
        await _downgrade_and_seed(database)
        await _upgrade(database)
        rules = Rules(database)
        [out] = await rules.call(lambda service: service.list("segment", None, None))
        assert (out.key, out.version, out.status) == ("old", 1, "active")
        assert out.definition["when"] == {"all": [leaf("profile.favourite_categories", "contains", "jeans")]}
        assert definition(out.definition).key == "old"
        assert (await rules.decide({"favourite_categories": ["jeans"]}, candidates=[])).segments == ["old"]


async def _downgrade_and_seed(database: Database) -> None:
    def run(connection: Connection) -> None:
        command.downgrade(_config(MIGRATIONS, connection), "0001")
        connection.execute(
            text("INSERT INTO segment (key, title, purpose, conditions, created_at) VALUES (:k, :t, :p, :c, :at)"),
            {
                "k": "old",
                "t": "Old",
                "p": PROFILED,
                "c": '[{"field": "favourite_categories", "op": "contains", "value": "jeans"}]',
                "at": datetime.now(UTC),
            },
        )

    async with database.engine.begin() as connection:
        await connection.run_sync(run)


async def _upgrade(database: Database) -> None:
    def run(connection: Connection) -> None:
        command.upgrade(_config(MIGRATIONS, connection), "head")

    async with database.engine.begin() as connection:
        await connection.run_sync(run)
