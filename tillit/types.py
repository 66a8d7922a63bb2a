"""Types that more than one component's API uses."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar.params import Parameter

from tillit.patterns import exact
from tillit.problems import Unprocessable

__all__ = [
    "FIELD_NAME_PATTERN",
    "PURPOSE_PATTERN",
    "SUBJECT_ID_PATTERN",
    "IPAddress",
    "ProfileFieldName",
    "PurposeKey",
    "SubjectId",
    "SubjectIdPath",
    "UnrepresentableTime",
    "as_utc",
    "check_utc_representable",
    "utcnow",
]

SUBJECT_ID_PATTERN = exact(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
PURPOSE_PATTERN = exact(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
FIELD_NAME_PATTERN = exact(r"^[a-z][a-z0-9_]{0,63}$")

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


class UnrepresentableTime(Unprocessable):
    """A date-time the schema allows that has no UTC equivalent: refused as 422, not 400.

    By tillit's convention (tests/schemathesis.toml) a 400 means "does not match the published
    schema", and ``0001-01-01T00:00:00+00:04`` matches ``format: date-time`` (schemathesis sent it).
    Not a ``ValueError``, so that msgspec lets it out of ``__post_init__`` as it is.
    """

    slug = "time-out-of-range"


def check_utc_representable(name: str, moment: datetime | None) -> None:
    """Refuse a time whose zone offset moves it outside years 1-9999 in UTC (:class:`UnrepresentableTime`).

    ``0001-01-01T00:00:00+00:38`` is a valid ISO 8601 time but has no UTC equivalent in Python: every
    later comparison or conversion would raise ``OverflowError`` (a 500, or a 503 through the gateway).
    Called from ``__post_init__``.
    """
    if moment is None:
        return
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise UnrepresentableTime(f"{name} {moment.isoformat()} lies outside the years 1-9999 once in UTC") from None
