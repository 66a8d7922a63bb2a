"""``tillit requests list``: reads the consent service's database directly."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.consent.app import MIGRATIONS
from services.consent.requests.cli import add_request_commands, list_requests, run_request_command
from services.consent.requests.repository import RequestRepository
from services.consent.requests.schemas import CreateRequest, TransitionRequest
from services.consent.requests.service import RequestService
from tillit.db import Database
from tillit.migrations import upgrade_to_head
from tillit.settings import Settings, load_settings

pytestmark = pytest.mark.anyio

RECEIVED = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings("consent", {"TILLIT_DATA_DIR": str(tmp_path)})


async def seed(settings: Settings) -> dict[str, str]:
    """Three requests received long ago: two overdue, one rejected."""
    database = Database(settings.database_url, settings.database_schema)
    await upgrade_to_head(database, MIGRATIONS)
    made: dict[str, str] = {}
    try:
        for subject, kind in (("astrid", "access"), ("lars", "erasure"), ("kadri", "access")):
            async with database.sessionmaker() as session, session.begin():
                service = RequestService(RequestRepository(session))
                command = CreateRequest(subject_id=subject, type=kind, channel="email", received_at=RECEIVED)  # type: ignore[arg-type]
                made[subject] = (await service.create(command)).id
        async with database.sessionmaker() as session, session.begin():
            service = RequestService(RequestRepository(session))
            await service.transition(made["lars"], TransitionRequest(to="rejected", actor="dpo:anna", note="no id"))
    finally:
        await database.dispose()
    return made


@pytest.fixture
async def ids(settings: Settings) -> dict[str, str]:
    return await seed(settings)


async def test_the_table_marks_overdue_requests(
    settings: Settings, ids: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await list_requests(settings) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "SUBJECT", "TYPE", "STATUS", "RECEIVED", "DUE"]
    rows = {line.split()[1]: line for line in lines[1:4]}
    assert rows["astrid"].startswith(ids["astrid"])
    assert rows["astrid"].endswith("OVERDUE")
    assert "2024-01-31 09:30" in rows["astrid"]
    assert "2024-02-29 09:30" in rows["astrid"]
    assert not rows["lars"].endswith("OVERDUE")
    assert lines[-1] == "3 request(s), 2 overdue"


async def test_filters_and_json(settings: Settings, ids: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert await list_requests(settings, overdue=True, as_json=True) == 0
    records = json.loads(capsys.readouterr().out)
    assert sorted(record["subject_id"] for record in records) == ["astrid", "kadri"]
    assert all(record["overdue"] for record in records)
    assert await list_requests(settings, status="rejected", as_json=True) == 0
    [rejected] = json.loads(capsys.readouterr().out)
    assert (rejected["id"], rejected["resolution"]) == (ids["lars"], "no id")
    assert await list_requests(settings, status="verified") == 0
    assert capsys.readouterr().out.strip() == "no data-subject requests match"


def test_the_command_line(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = asyncio.run(seed(settings))
    monkeypatch.setenv("TILLIT_DATA_DIR", str(settings.data_dir))
    parser = argparse.ArgumentParser(prog="tillit")
    add_request_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["requests", "list", "--overdue", "--status", "received", "--json"])
    assert run_request_command(args) == 0
    assert sorted(record["id"] for record in json.loads(capsys.readouterr().out)) == sorted(
        [ids["astrid"], ids["kadri"]]
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["requests", "list", "--status", "lost"])


async def test_an_unmigrated_database_is_reported(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    assert await list_requests(settings) == 1
    assert "has the consent service been started" in capsys.readouterr().err
