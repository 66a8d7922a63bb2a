"""A running process takes a changed policy only when it validates; otherwise the old one stays."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.datastructures import State

from tillit.policy import Policy, load_policy
from tillit.policy_reload import PolicyReloader
from tillit.tests.test_policy import VALID

pytestmark = pytest.mark.anyio

NEW_FIELD = VALID.replace("fields:\n", "fields:\n  first_name: {category: user.name.first}\n")


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "release.yaml"
    edit(path, VALID)
    return path


def edit(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def remove(path: Path) -> None:
    path.unlink()


def app_with_policy(policy_dir: Path) -> Litestar:
    return Litestar(route_handlers=[], state=State({"policy": load_policy(policy_dir)}), logging_config=None)


async def test_a_valid_change_replaces_the_policy(policy_file: Path) -> None:
    app = app_with_policy(policy_file.parent)
    reloader = PolicyReloader(app, policy_file.parent)
    assert not await reloader.poll()
    edit(policy_file, NEW_FIELD)
    assert await reloader.poll()
    assert "first_name" in app.state.policy.fields
    assert not await reloader.poll()


async def test_an_invalid_change_keeps_the_old_policy_and_warns_naming_file_key_and_problem(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with_policy(policy_file.parent)
    before = app.state.policy
    reloader = PolicyReloader(app, policy_file.parent)
    edit(policy_file, NEW_FIELD.replace("user.name.first", "user.name.nickname"))
    with caplog.at_level(logging.WARNING, logger="tillit.policy"):
        assert not await reloader.poll()
    assert app.state.policy is before
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert str(policy_file) in record.getMessage()
    assert "fields.first_name.category" in record.getMessage()
    assert "'user.name.nickname' is not a fideslang data category" in record.getMessage()
    edit(policy_file, NEW_FIELD)
    assert await reloader.poll()
    assert "first_name" in app.state.policy.fields


async def test_a_component_check_can_refuse_a_policy(policy_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = app_with_policy(policy_file.parent)
    before = app.state.policy

    async def needs_first_name(_: Litestar, policy: Policy) -> None:
        if "shoe_size" in policy.fields:
            raise RuntimeError("this component cannot serve shoe_size")

    reloader = PolicyReloader(app, policy_file.parent, [needs_first_name])
    edit(policy_file, NEW_FIELD)
    with caplog.at_level(logging.WARNING, logger="tillit.policy"):
        assert not await reloader.poll()
    assert app.state.policy is before
    assert "this component cannot serve shoe_size" in caplog.text


async def test_sighup_reloads_even_when_no_file_looks_changed(policy_file: Path) -> None:
    app = app_with_policy(policy_file.parent)
    before = app.state.policy
    reloader = PolicyReloader(app, policy_file.parent)
    assert await reloader.poll(hangup=True)
    assert app.state.policy is not before


async def test_a_file_added_or_removed_counts_as_a_change(policy_file: Path) -> None:
    app = app_with_policy(policy_file.parent)
    reloader = PolicyReloader(app, policy_file.parent)
    extra = policy_file.parent / "traits.yaml"
    edit(extra, "traits:\n  style: {type: text, category: user.demographic.profile, description: d, max_length: 9}\n")
    assert await reloader.poll()
    assert "style" in app.state.policy.traits
    remove(extra)
    assert await reloader.poll()
    assert "style" not in app.state.policy.traits


async def test_a_file_edited_before_watching_started_is_reloaded_at_the_first_look(policy_file: Path) -> None:
    app = app_with_policy(policy_file.parent)
    edit(policy_file, NEW_FIELD)
    reloader = PolicyReloader(app, policy_file.parent)
    assert await reloader.poll()
    assert "first_name" in app.state.policy.fields
