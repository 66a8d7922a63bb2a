"""The shapes of the preference profile's values, shared by every edge that accepts them.

The preferences service stores these values and the gateway's shopper API takes them from the
preference page; both must refuse exactly the same input, so both decode with these types.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

from tillit.patterns import exact

__all__ = [
    "PRINTABLE",
    "Amount",
    "ContactFrequency",
    "Currency",
    "DressSize",
    "Frequency",
    "LetterSize",
    "PriceRange",
    "ShoeSize",
    "ShortText",
    "Sizes",
    "TextList",
    "WaistSize",
]

PRINTABLE: Final = exact(r"^[^\x00-\x1f\x7f]+$")
"""Free text: any characters but control characters (no line breaks, tabs or NULs)."""

ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=60, pattern=PRINTABLE)]
TextList = Annotated[list[ShortText], msgspec.Meta(max_length=20)]

LetterSize = Literal["XS", "S", "M", "L", "XL", "XXL"]
WaistSize = Annotated[int, msgspec.Meta(ge=24, le=44, description="Jeans waist W24-W44")]
DressSize = Annotated[int, msgspec.Meta(ge=32, le=48, multiple_of=2, description="EU dress size 32-48")]
ShoeSize = Annotated[float, msgspec.Meta(ge=16, le=52, multiple_of=0.5, description="EU shoe size 16-52")]
Frequency = Literal["daily", "weekly", "fortnightly", "monthly", "quarterly"]
Currency = Literal["SEK", "NOK", "DKK", "ISK", "EUR", "GBP", "CHF", "PLN", "USD"]
"""ISO 4217 codes of the currencies the shop sells in."""
Amount = Annotated[int, msgspec.Meta(ge=0, le=10_000_000, description="Whole units of the currency")]


class Sizes(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Sizes per garment type, each from that type's allowed set. In a patch a key present sets,
    ``null`` clears, absent leaves alone."""

    tops: LetterSize | UnsetType | None = UNSET
    bottoms: LetterSize | WaistSize | UnsetType | None = UNSET
    dresses: DressSize | UnsetType | None = UNSET
    outerwear: LetterSize | UnsetType | None = UNSET
    knitwear: LetterSize | UnsetType | None = UNSET
    shoes: ShoeSize | UnsetType | None = UNSET


class ContactFrequency(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """How often the shopper wants to hear from the shop, per policy channel.

    Whether a channel may contact the shopper at all is consent's business (services/consent), not
    a frequency: there is deliberately no ``never`` here.
    """

    email: Frequency | UnsetType | None = UNSET
    sms: Frequency | UnsetType | None = UNSET


class PriceRange(msgspec.Struct, forbid_unknown_fields=True):
    """What the shopper likes to spend per item; ``min`` above ``max`` is refused with a 422."""

    min: Amount
    max: Amount
    currency: Currency
