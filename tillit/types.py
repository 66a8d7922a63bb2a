"""Types that more than one component's API uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar.params import Parameter

__all__ = [
    "FIELD_NAME_PATTERN",
    "PURPOSE_PATTERN",
    "SUBJECT_ID_PATTERN",
    "IPAddress",
    "ProfileFieldName",
    "PurposeKey",
    "SubjectId",
    "SubjectIdPath",
    "as_utc",
    "utcnow",
]

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
PURPOSE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$"
FIELD_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"

SubjectId = Annotated[str, msgspec.Meta(pattern=SUBJECT_ID_PATTERN, max_length=64)]
PurposeKey = Annotated[str, msgspec.Meta(pattern=PURPOSE_PATTERN, min_length=1, max_length=100)]
ProfileFieldName = Annotated[
    str, msgspec.Meta(pattern=FIELD_NAME_PATTERN, description="A profile field declared in the policy.")
]
IPAddress = Annotated[
    str,
    msgspec.Meta(max_length=45, extra_json_schema={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
]
SubjectIdPath = Annotated[
    str,
    Parameter(
        pattern=SUBJECT_ID_PATTERN,
        max_length=64,
        description="The shop's identifier for the shopper: 1-64 letters, digits, '.', '_', ':' or '-'.",
    ),
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
