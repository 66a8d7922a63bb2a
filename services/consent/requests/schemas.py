"""What the data-subject request API accepts and answers (msgspec Structs at the edge)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from tillit.patterns import exact
from tillit.types import PurposeKey, SubjectId

__all__ = [
    "ACTOR_PATTERN",
    "CHANNEL_PATTERN",
    "CURSOR_PATTERN",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "TERMINAL_STATUSES",
    "TEXT_PATTERN",
    "Actor",
    "CreateRequest",
    "ExtendRequest",
    "ExtensionOut",
    "HistoryEntry",
    "RequestOut",
    "RequestPage",
    "RequestStatus",
    "RequestType",
    "StepAction",
    "TransitionRequest",
]

RequestType = Literal["access", "erasure", "rectification", "objection"]
RequestStatus = Literal["received", "verified", "in_progress", "completed", "rejected"]
StepAction = Literal["received", "transition", "extension"]
TERMINAL_STATUSES: Final = frozenset({"completed", "rejected"})
DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 200

CHANNEL_PATTERN: Final = exact(r"^[a-z][a-z0-9_]{0,39}$")
ACTOR_PATTERN: Final = exact(r"^[a-z][a-z0-9_]{0,39}(:[A-Za-z0-9._@-]{1,64})?$")
CURSOR_PATTERN: Final = exact(r"^[A-Za-z0-9_-]{1,200}$")

Channel = Annotated[
    str,
    msgspec.Meta(
        pattern=CHANNEL_PATTERN,
        max_length=40,
        description="Where the request came in: preference_center, email, post, phone, dpo, ...",
    ),
]
Actor = Annotated[
    str,
    msgspec.Meta(
        pattern=ACTOR_PATTERN,
        max_length=105,
        description='Who acts: a role and optionally a person ("dpo:anna") or a system ("preference_center").',
    ),
]
# At least one non-blank character and no NUL (PostgreSQL text cannot hold it), for decoder and schema alike.
# Explicit ASCII whitespace: ``\s`` means different characters in Python and in the ECMA-262
# regexes of JSON Schema, so a note a client validated could be refused here.
TEXT_PATTERN: Final = exact(r"^[ \t\r\n]*[^ \t\r\n\x00][^\x00]*$")
Note = Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=TEXT_PATTERN)]
Details = Annotated[str, msgspec.Meta(min_length=1, max_length=2000, pattern=TEXT_PATTERN)]


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A new request. Objections name the purposes objected to; rectifications say what is wrong."""

    subject_id: SubjectId
    type: RequestType
    channel: Channel
    details: (
        Annotated[Details, msgspec.Meta(description="What the subject asks for; required for rectification")] | None
    ) = None
    purposes: Annotated[
        list[PurposeKey],
        msgspec.Meta(max_length=50, description="The purposes objected to (objection only)"),
    ] = msgspec.field(default_factory=list)
    actor: Annotated[Actor, msgspec.Meta(description="Who registers it; the channel by default")] | None = None
    received_at: (
        Annotated[
            datetime,
            msgspec.Meta(tz=True, description="When the request reached the controller, if before now (post, e-mail)"),
        ]
        | None
    ) = None


class TransitionRequest(msgspec.Struct, forbid_unknown_fields=True):
    to: RequestStatus
    actor: Actor
    note: (
        Annotated[Note, msgspec.Meta(description="Required when rejecting: the reason given to the subject")] | None
    ) = None


class ExtendRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Art. 12(3): once, by one or two further months, with the reason given to the subject."""

    months: Literal[1, 2]
    reason: Note
    actor: Actor


class HistoryEntry(msgspec.Struct):
    seq: int
    at: datetime
    actor: str
    action: StepAction
    from_status: RequestStatus | None
    to_status: RequestStatus
    note: str | None
    due_at: datetime | None


class ExtensionOut(msgspec.Struct):
    months: int
    reason: str
    until: datetime
    original_due_at: datetime
    actor: str
    at: datetime


class RequestOut(msgspec.Struct):
    id: str
    subject_id: str
    type: RequestType
    status: RequestStatus
    channel: str
    details: str | None
    purposes: list[str]
    received_at: datetime
    due_at: Annotated[datetime, msgspec.Meta(description="The deadline in force (moved by an extension)")]
    extension: ExtensionOut | None
    overdue: Annotated[bool, msgspec.Meta(description="Not completed or rejected and past due_at, as of now")]
    closed_at: datetime | None
    resolution: Annotated[str | None, msgspec.Meta(description="The reason of a rejection or the completion note")]
    version: int
    history: list[HistoryEntry]


class RequestPage(msgspec.Struct):
    items: list[RequestOut]
    next_cursor: Annotated[str | None, msgspec.Meta(description="Pass as cursor for the next page; null at the end")]
