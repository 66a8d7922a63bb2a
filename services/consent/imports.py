"""Bulk import of consents collected elsewhere (an old newsletter tool, a store's paper forms).

A batch is CSV with a header row or NDJSON, one consent per row. Every row is checked before
anything is written; one bad row refuses the whole batch with every problem listed by line, so a
batch is imported completely or not at all. A row already imported (same subject, purpose, action
and collection time) is skipped, so running the same file again changes nothing.
"""

from __future__ import annotations

import csv
import io
import ipaddress
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec

from tillit.policy import Language, Policy
from tillit.types import IPAddress, PurposeKey, SubjectId, UnrepresentableTime, check_utc_representable

__all__ = ["MAX_IMPORT_ROWS", "ImportRow", "RowProblem", "parse_batch"]

MAX_IMPORT_ROWS: Final = 10_000
_MAX_LISTED_PROBLEMS: Final = 100


class ImportRow(msgspec.Struct, forbid_unknown_fields=True):
    subject_id: SubjectId
    purpose: PurposeKey
    action: Literal["give", "refuse", "withdraw"]
    collected_at: Annotated[datetime, msgspec.Meta(tz=True)]
    notice_version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    language: Language | None = None
    ip: IPAddress | None = None
    page: Annotated[str, msgspec.Meta(max_length=2048)] | None = None

    def __post_init__(self) -> None:
        check_utc_representable("collected_at", self.collected_at)


class RowProblem(msgspec.Struct):
    line: int
    problem: str


def _csv_rows(content: str) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(content))
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader cannot find the next row's start after this (e.g. a bare carriage return).
            yield reader.line_num + 1, ValueError(f"not valid CSV: {exc}")
            return
        extra = row.pop(None, None)  # type: ignore[call-overload]
        if extra:
            yield reader.line_num, ValueError(f"{len(extra)} value(s) more than the header has columns")
            continue
        yield reader.line_num, {key: value for key, value in row.items() if value not in ("", None)}


def _ndjson_rows(content: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            yield number, ValueError(f"not valid JSON: {exc}")


def parse_batch(
    content: str, kind: Literal["csv", "ndjson"], policy: Policy, now: datetime, skew: timedelta
) -> tuple[list[tuple[int, ImportRow]], list[RowProblem]]:
    """Every row, checked against the schema and the policy; the problems by line number."""
    rows: list[tuple[int, ImportRow]] = []
    problems: list[RowProblem] = []
    source = _csv_rows(content) if kind == "csv" else _ndjson_rows(content)
    for line, raw in source:
        if len(rows) + len(problems) >= MAX_IMPORT_ROWS:
            problems.append(RowProblem(line, f"a batch holds at most {MAX_IMPORT_ROWS} rows; split the file"))
            break
        if isinstance(raw, ValueError):
            problems.append(RowProblem(line, str(raw)))
            continue
        try:
            row = msgspec.convert(raw, ImportRow, strict=kind == "ndjson")
        except (msgspec.ValidationError, UnrepresentableTime) as exc:
            problems.append(RowProblem(line, exc.detail if isinstance(exc, UnrepresentableTime) else str(exc)))
            continue
        problem = _policy_problem(row, policy, now, skew)
        if problem:
            problems.append(RowProblem(line, problem))
        else:
            rows.append((line, row))
    if not rows and not problems:
        problems.append(RowProblem(0, "the batch holds no rows"))
    return rows, problems[:_MAX_LISTED_PROBLEMS]


def _policy_problem(row: ImportRow, policy: Policy, now: datetime, skew: timedelta) -> str | None:
    if row.purpose not in policy.purposes:
        return f"purpose {row.purpose!r} is not declared in the policy"
    if row.collected_at > now + skew:
        return f"collected_at {row.collected_at.isoformat()} lies in the future"
    if row.notice_version is not None and policy.notice(row.purpose, row.notice_version) is None:
        return f"notice version {row.notice_version} of purpose {row.purpose!r} is not published"
    if row.ip is not None:
        try:
            ipaddress.ip_address(row.ip)
        except ValueError:
            return f"ip {row.ip!r} is not an IPv4 or IPv6 address"
    return None
