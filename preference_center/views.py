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


def _fields(profile: dict[str, Any]) -> dict[str, Any]:
    fields = profile.get("fields", profile)
    return fields if isinstance(fields, dict) else {}


def profile_rows(profile: dict[str, Any]) -> list[ProfileRow]:
    fields = _fields(profile)
    provenance = profile.get("provenance") if isinstance(profile.get("provenance"), dict) else {}
    ordered = [name for name in _FIELD_ORDER if name in fields] + sorted(set(fields) - set(_FIELD_ORDER))
    rows = []
    for name in ordered:
        value = fields[name]
        if value is None or value == [] or value == {}:
            continue
        origin = provenance.get(name) if isinstance(provenance, dict) else None
        origin = origin if isinstance(origin, dict) else {}
        rows.append(ProfileRow(name, value, origin.get("source"), origin.get("updated_at")))
    return rows


def _list(answer: dict[str, Any], *keys: str) -> list[dict[str, Any]]:
    for key in keys:
        value = answer.get(key)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
    return []


def consent_views(answer: dict[str, Any]) -> list[ConsentView]:
    views = []
    for item in _list(answer, "purposes", "consents"):
        notice = item.get("notice") if isinstance(item.get("notice"), dict) else {}
        state = item.get("state") if isinstance(item.get("state"), dict) else item
        purpose = str(item.get("purpose") or item.get("key") or "")
        status = state.get("status") or "none"
        views.append(
            ConsentView(
                purpose=purpose,
                anchor="purpose-" + purpose.replace(".", "-"),
                title=str(notice.get("title") or item.get("title") or purpose),
                text=str(notice.get("text") or item.get("text") or ""),
                legal_basis=str(item.get("legal_basis") or "consent"),
                status=str(status),
                active=bool(state.get("active")),
                since=state.get("since"),
                expires_at=state.get("expires_at"),
                notice_version=notice.get("version") or item.get("notice_version"),
                consented_version=state.get("notice_version"),
                needs_reconsent=bool(state.get("needs_reconsent")),
                event_id=state.get("event_id"),
            )
        )
    return views


def history_views(answer: dict[str, Any], consents: dict[str, Any]) -> list[HistoryView]:
    titles = {view.purpose: view.title for view in consent_views(consents)}
    events = _list(answer, "events", "history")
    views = [
        HistoryView(
            event_id=str(event.get("id") or event.get("event_id") or ""),
            purpose=str(event.get("purpose") or ""),
            title=titles.get(str(event.get("purpose")), str(event.get("purpose") or "")),
            action=str(event.get("action") or ""),
            source=str(event.get("source") or ""),
            at=str(event.get("recorded_at") or event.get("collected_at") or ""),
            notice_version=event.get("notice_version"),
            has_receipt=event.get("action") in ("given", "withdrawn", "confirmed")
            or bool(event.get("has_receipt") or event.get("receipt_available")),
        )
        for event in events
    ]
    views.sort(key=lambda view: view.at, reverse=True)
    return views
