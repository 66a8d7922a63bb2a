"""What the preferences service's API accepts and answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["PROFILE_FIELD_NAMES", "Profile", "ProfileFields", "ProfilePatch", "Provenance"]

ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=60)]
TextList = Annotated[list[ShortText], msgspec.Meta(max_length=20)]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=254, extra_json_schema={"format": "email"})]
E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
ShoeSize = Annotated[float, msgspec.Meta(ge=16, le=52, multiple_of=0.5)]


class ProfileFields(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Every profile field; each must also be declared in the policy. ``null`` removes a value."""

    email: Email | UnsetType | None = UNSET
    phone: E164 | UnsetType | None = UNSET
    first_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | UnsetType | None = UNSET
    preferred_language: Literal["en", "sv", "nb", "et"] | UnsetType | None = UNSET
    shoe_size: ShoeSize | UnsetType | None = UNSET
    clothing_size: Literal["XS", "S", "M", "L", "XL", "XXL"] | UnsetType | None = UNSET
    favourite_categories: TextList | UnsetType | None = UNSET
    favourite_brands: TextList | UnsetType | None = UNSET
    topics: TextList | UnsetType | None = UNSET


PROFILE_FIELD_NAMES: tuple[str, ...] = ProfileFields.__struct_fields__


class ProfilePatch(msgspec.Struct, forbid_unknown_fields=True):
    """A partial update: fields present are set (``null`` clears them), absent ones are left alone."""

    fields: Annotated[ProfileFields, msgspec.Meta(extra_json_schema={"minProperties": 1})]
    source: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]+(:[A-Za-z0-9._-]{1,64})?$", max_length=80)]


class Provenance(msgspec.Struct):
    source: str
    updated_at: datetime


class Profile(msgspec.Struct):
    subject_id: str
    fields: dict[str, Any]
    provenance: dict[str, Provenance]
