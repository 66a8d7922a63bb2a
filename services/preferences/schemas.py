"""What the preferences service's API accepts and answers.

Every constraint a schema can express is expressed here, so the published OpenAPI document says
exactly what the decoder takes (400 otherwise). What a schema cannot express (an undeliverable
e-mail address, ``price_range.min`` above ``max``) is refused by the service with a 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from services.preferences.quizzes.schemas import QuizSessionRecord
from tillit.patterns import exact
from tillit.profile_values import (
    PRINTABLE,
    ContactFrequency,
    Currency,
    Frequency,
    LetterSize,
    PriceRange,
    Sizes,
    TextList,
)
from tillit.types import SubjectId

__all__ = [
    "CONTACT_FREQUENCY_CHANNELS",
    "MERGED_FIELDS",
    "PROFILE_FIELD_NAMES",
    "ContactFrequency",
    "Currency",
    "ErasureConfirmation",
    "Frequency",
    "PreferenceSections",
    "PriceRange",
    "Profile",
    "ProfileBatch",
    "ProfileBatchRequest",
    "ProfileChangeOut",
    "ProfileFields",
    "ProfileHistory",
    "ProfilePage",
    "ProfilePatch",
    "ProfileStats",
    "Provenance",
    "Sizes",
    "StoredProfile",
    "SubjectExport",
    "SubjectProfile",
]

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, extra_json_schema={"format": "email"})]
E164 = Annotated[str, msgspec.Meta(pattern=exact(r"^\+[1-9][0-9]{6,14}$"), description="E.164, e.g. +46701234567")]
FirstName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=PRINTABLE)]
SourceName = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z_]+(:[A-Za-z0-9._-]{1,64})?$"), max_length=80)]

CONTACT_FREQUENCY_CHANNELS: tuple[str, ...] = ContactFrequency.__struct_fields__


class ProfileFields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Every profile field; each must also be declared in the policy. ``null`` removes a value.

    ``sizes`` and ``contact_frequency`` are merged key by key (RFC 7396 style: a key present sets,
    ``null`` clears, absent leaves alone); every other field is replaced whole.
    """

    email: Email | UnsetType | None = UNSET
    phone: E164 | UnsetType | None = UNSET
    first_name: FirstName | UnsetType | None = UNSET
    preferred_language: Literal["en", "sv", "nb", "et"] | UnsetType | None = UNSET
    sizes: Sizes | UnsetType | None = UNSET
    shoe_size: (
        Annotated[float, msgspec.Meta(ge=16, le=52, multiple_of=0.5, description="Kept for channels that read it")]
        | UnsetType
        | None
    ) = UNSET
    clothing_size: LetterSize | UnsetType | None = UNSET
    favourite_categories: TextList | UnsetType | None = UNSET
    favourite_brands: TextList | UnsetType | None = UNSET
    topics: TextList | UnsetType | None = UNSET
    price_range: PriceRange | UnsetType | None = UNSET
    contact_frequency: ContactFrequency | UnsetType | None = UNSET


PROFILE_FIELD_NAMES: tuple[str, ...] = ProfileFields.__struct_fields__
MERGED_FIELDS: frozenset[str] = frozenset({"sizes", "contact_frequency"})


class ProfilePatch(msgspec.Struct, forbid_unknown_fields=True):
    """A partial update: fields present are set (``null`` clears them), absent ones are left alone."""

    fields: Annotated[ProfileFields, msgspec.Meta(extra_json_schema={"minProperties": 1})]
    source: SourceName


class Provenance(msgspec.Struct):
    """Where the current value came from (``preference_page``, ``import``, ``quiz:<id>``...) and when."""

    source: str
    updated_at: datetime


class Profile(msgspec.Struct):
    subject_id: str
    fields: dict[str, Any]
    provenance: dict[str, Provenance]


class StoredProfile(msgspec.Struct):
    """The profile part of an export: possibly empty, never absent."""

    fields: dict[str, Any]
    provenance: dict[str, Provenance]


class ProfileChangeOut(msgspec.Struct):
    """One change of one field: ``old_value`` null means it was set, ``new_value`` null that it was cleared."""

    id: int
    field: str
    old_value: Any
    new_value: Any
    source: str
    changed_at: datetime


class ProfileHistory(msgspec.Struct):
    """Changes newest first; pass the last ``id`` as ``before`` for the next page while ``more``."""

    subject_id: str
    changes: list[ProfileChangeOut]
    more: bool


class PreferenceSections(msgspec.Struct):
    """What this service holds about a subject, one key per kind of record.

    New kinds of record arrive as new keys, so consumers of today's export keep working.
    """

    profile: StoredProfile
    profile_history: list[ProfileChangeOut]
    quiz_sessions: list[QuizSessionRecord]


class SubjectExport(msgspec.Struct):
    """Everything the preferences service holds about one subject (GDPR Art. 15 and 20)."""

    subject_id: str
    service: str
    exported_at: datetime
    sections: PreferenceSections


class SubjectQuizSessions(msgspec.Struct):
    """The subject's quiz sessions alone (the export's ``quiz_sessions`` section), oldest first."""

    sessions: list[QuizSessionRecord]


class ProfileStats(msgspec.Struct):
    """How many subjects hold a profile now (``tillit policy diff`` for purposes not based on consent)."""

    as_of: datetime
    subjects: int


class ErasureConfirmation(msgspec.Struct):
    """Proof of an erasure: rows deleted per table. Erasing again confirms again, with zero counts."""

    subject_id: str
    service: str
    erased_at: datetime
    rows_erased: dict[str, int]


class ProfileBatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    subject_ids: Annotated[list[SubjectId], msgspec.Meta(max_length=5000)]


class SubjectProfile(msgspec.Struct):
    subject_id: str
    fields: dict[str, Any]


class ProfileBatch(msgspec.Struct):
    """The profiles of the subjects asked for that hold one, in subject order; the others are absent."""

    profiles: list[SubjectProfile]


class ProfilePage(msgspec.Struct):
    """One keyset page of every profile: ask again with ``after`` = ``last`` until ``last`` is null."""

    profiles: list[SubjectProfile]
    last: str | None
