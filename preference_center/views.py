"""Gateway answers turned into what the templates show (no I/O here, and no personal data kept)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

__all__ = [
    "CATEGORIES",
    "CURRENCIES",
    "FREQUENCIES",
    "LETTER_SIZES",
    "TOPICS",
    "ConsentView",
    "HistoryView",
    "ProfileRow",
    "consent_views",
    "history_views",
    "profile_rows",
    "profile_values",
]

LETTER_SIZES: Final = ("XS", "S", "M", "L", "XL", "XXL")
FREQUENCIES: Final = ("daily", "weekly", "fortnightly", "monthly", "quarterly")
CURRENCIES: Final = ("SEK", "NOK", "EUR", "DKK", "ISK", "GBP", "CHF", "PLN", "USD")
CATEGORIES: Final = (
    "dresses",
    "knitwear",
    "jeans",
    "shirts",
    "outerwear",
    "outdoor",
    "running",
    "sneakers",
    "accessories",
    "kidswear",
)
TOPICS: Final = ("new-arrivals", "sale", "style-tips", "outdoor-guides", "sustainability")
_RECEIPTED: Final = ("given", "withdrawn")
"""The consent service signs a receipt for these actions."""
_FIELD_ORDER: Final = (
    "first_name",
    "email",
    "phone",
    "preferred_language",
    "sizes",
    "shoe_size",
    "clothing_size",
    "favourite_categories",
    "favourite_brands",
    "price_range",
    "topics",
    "contact_frequency",
)


class ProfileRow(msgspec.Struct, frozen=True):
    """One thing the shop holds: the field, its value, and where it came from and when."""

    field: str
    value: Any
    source: str | None
    updated_at: str | None


class ConsentView(msgspec.Struct, frozen=True):
    purpose: str
    anchor: str
    title: str
    text: str
    legal_basis: str
    status: str
    """given, refused, withdrawn, expired, pending, or none (never asked)."""
    active: bool
    since: str | None
    expires_at: str | None
    notice_version: int | None
    consented_version: int | None
    needs_reconsent: bool
    event_id: str | None
    double_opt_in: bool = False

    @property
    def toggleable(self) -> bool:
        return self.legal_basis == "consent"


class HistoryView(msgspec.Struct, frozen=True):
    event_id: str
    purpose: str
    title: str
    action: str
    source: str
    at: str
    notice_version: int | None
    has_receipt: bool


def profile_values(profile: dict[str, Any]) -> dict[str, Any]:
    """``{field: value}`` of a ``GET /v1/me/profile`` answer (``{"fields": {name: {value, source, updated_at}}}``)."""
    fields = profile.get("fields")
    if not isinstance(fields, dict):
        return {}
    return {name: item.get("value") for name, item in fields.items() if isinstance(item, dict)}


def profile_rows(profile: dict[str, Any]) -> list[ProfileRow]:
    fields = profile.get("fields") if isinstance(profile.get("fields"), dict) else {}
    ordered = [name for name in _FIELD_ORDER if name in fields] + sorted(set(fields) - set(_FIELD_ORDER))
    rows = []
    for name in ordered:
        item = fields[name] if isinstance(fields[name], dict) else {}
        value = item.get("value")
        if value is None or value == [] or value == {}:
            continue
        rows.append(ProfileRow(name, value, item.get("source"), item.get("updated_at")))
    return rows


def consent_views(answer: dict[str, Any]) -> list[ConsentView]:
    items = answer.get("consents") if isinstance(answer.get("consents"), list) else []
    return [
        ConsentView(
            purpose=str(item.get("purpose") or ""),
            anchor="purpose-" + str(item.get("purpose") or "").replace(".", "-"),
            title=str(item.get("title") or item.get("purpose") or ""),
            text=str(item.get("notice_text") or ""),
            legal_basis=str(item.get("legal_basis") or "consent"),  # the shopper API lists consent purposes today
            status=str(item.get("status") or "none"),
            active=bool(item.get("active")),
            since=item.get("since"),
            expires_at=item.get("expires_at"),
            notice_version=item.get("notice_version"),
            consented_version=item.get("consented_notice_version"),
            needs_reconsent=bool(item.get("needs_reconsent")),
            event_id=item.get("receipt_event_id"),
            double_opt_in=bool(item.get("double_opt_in")),
        )
        for item in items
        if isinstance(item, dict)
    ]


def history_views(answer: dict[str, Any], consents: dict[str, Any]) -> list[HistoryView]:
    titles = {view.purpose: view.title for view in consent_views(consents)}
    events = [event for event in answer.get("events") or [] if isinstance(event, dict)]
    views = [
        HistoryView(
            event_id=str(event.get("event_id") or ""),
            purpose=str(event.get("purpose") or ""),
            title=titles.get(str(event.get("purpose")), str(event.get("purpose") or "")),
            action=str(event.get("action") or ""),
            source=str(event.get("source") or ""),
            at=str(event.get("collected_at") or ""),
            notice_version=event.get("notice_version"),
            has_receipt=event.get("action") in _RECEIPTED,
        )
        for event in events
    ]
    views.sort(key=lambda view: view.at, reverse=True)
    return views
