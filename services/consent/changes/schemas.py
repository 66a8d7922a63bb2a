"""What the change feed answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "ChangeAction", "ChangeOut", "ChangePage"]

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000

ChangeAction = Literal["withdrawn", "refused", "expired", "erased"]


class ChangeOut(msgspec.Struct):
    seq: int
    subject_id: str
    purpose: Annotated[str | None, msgspec.Meta(description="None for erased: every purpose")]
    action: ChangeAction
    occurred_at: datetime
    event_id: Annotated[str | None, msgspec.Meta(description="The ledger event behind the change")]


class ChangePage(msgspec.Struct):
    changes: list[ChangeOut]
    last_seq: Annotated[int, msgspec.Meta(description="Ask again with after= this to continue")]
