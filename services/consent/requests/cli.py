"""``tillit requests list [--status S] [--overdue] [--json]``: the DPO's view of data-subject requests.

Reads the consent service's own database directly (the same URL and schema the service uses), so it
works without the gateway and without a token; it only reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import get_args

import msgspec
from sqlalchemy.exc import SQLAlchemyError

from services.consent.requests.repository import RequestRepository
from services.consent.requests.schemas import MAX_PAGE_SIZE, RequestOut, RequestStatus
from services.consent.requests.service import RequestService
from tillit.db import Database
from tillit.problems import TillitError
from tillit.settings import Settings, load_settings

__all__ = ["add_request_commands", "format_table", "list_requests", "run_request_command"]

_COLUMNS = ("ID", "SUBJECT", "TYPE", "STATUS", "RECEIVED", "DUE", "")


async def _fetch_all(database: Database, *, status: str | None, overdue: bool) -> list[RequestOut]:
    """Every matching request, newest first, read page by page."""
    records: list[RequestOut] = []
    cursor: str | None = None
    async with database.sessionmaker() as session:
        service = RequestService(RequestRepository(session))
        while True:
            page = await service.page(
                status=status, overdue=True if overdue else None, limit=MAX_PAGE_SIZE, cursor=cursor
            )
            records.extend(page.items)
            if page.next_cursor is None:
                return records
            cursor = page.next_cursor


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def format_table(records: Sequence[RequestOut]) -> str:
    """A plain-text table; overdue requests are marked ``OVERDUE``, extended ones ``extended``."""
    rows = [
        (
            record.id,
            record.subject_id,
            record.type,
            record.status,
            _day(record.received_at),
            _day(record.due_at),
            "OVERDUE" if record.overdue else ("extended" if record.extension else ""),
        )
        for record in records
    ]
    widths = [max(len(str(row[i])) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    header = "  ".join(cell.ljust(width) for cell, width in zip(_COLUMNS, widths, strict=True)).rstrip()
    return "\n".join([header, *lines])


async def list_requests(
    settings: Settings, *, status: str | None = None, overdue: bool = False, as_json: bool = False
) -> int:
    """Print the requests (all, or one status, or only overdue ones) as a table or JSON; the exit code."""
    database = Database(settings.database_url, settings.database_schema)
    try:
        records = await _fetch_all(database, status=status, overdue=overdue)
    except SQLAlchemyError as exc:
        reason = str(exc).splitlines()[0]
        print(
            f"cannot read data-subject requests from the consent database: {type(exc).__name__}: {reason}\n"
            "(has the consent service been started once, so that its migrations ran?)",
            file=sys.stderr,
        )
        return 1
    except TillitError as exc:
        print(f"cannot list data-subject requests: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await database.dispose()
    if as_json:
        print(msgspec.json.encode(records).decode())
    elif records:
        print(format_table(records))
        overdue_count = sum(record.overdue for record in records)
        print(f"\n{len(records)} request(s), {overdue_count} overdue")
    else:
        print("no data-subject requests match")
    return 0


def add_request_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``requests list [--status S] [--overdue] [--json]`` to the ``tillit`` command's sub-commands."""
    requests = subparsers.add_parser("requests", help="GDPR data-subject requests")
    actions = requests.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list requests, newest first")
    listing.add_argument("--status", choices=get_args(RequestStatus), help="only requests in this status")
    listing.add_argument("--overdue", action="store_true", help="only requests past their due date")
    listing.add_argument("--json", action="store_true", help="print the records as JSON")


def run_request_command(args: argparse.Namespace) -> int:
    """Run the ``requests`` sub-command parsed by :func:`add_request_commands`."""
    if args.action == "list":
        return asyncio.run(
            list_requests(load_settings("consent"), status=args.status, overdue=args.overdue, as_json=args.json)
        )
    print(f"unknown requests action {args.action!r}", file=sys.stderr)
    return 2
