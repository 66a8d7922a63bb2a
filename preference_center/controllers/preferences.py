"""Preferences: sizes, categories, brands, price range, topics, frequency per channel, language."""

from __future__ import annotations

from typing import Any, Final

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.response import Redirect, Template

from preference_center.gateway_client import GatewayError
from preference_center.i18n import LANGUAGES
from preference_center.security import Session, SessionSealer, is_secure
from preference_center.views import CATEGORIES, CURRENCIES, FREQUENCIES, LETTER_SIZES, TOPICS, profile_values
from preference_center.web import gateway_of, provide_session, render, see_other

__all__ = ["PreferencesController", "form_to_fields"]

_SIZE_KINDS: Final = ("tops", "bottoms", "dresses", "outerwear", "knitwear", "shoes")
_MAX_ITEMS: Final = 20
_MAX_TEXT: Final = 60


class FormProblem(ValueError):
    """A value the form cannot have sent; the message is the field's name."""


def _number(text: str, field: str, *, integer: bool = True) -> int | float | None:
    text = text.strip().replace(",", ".").replace("\u00a0", "").replace(" ", "")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise FormProblem(field) from exc
    if integer:
        if not value.is_integer():
            raise FormProblem(field)
        return int(value)
    return int(value) if value.is_integer() else value


def _text_list(values: list[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        item = " ".join(value.split())[:_MAX_TEXT]
        if item and item not in seen:
            seen.append(item)
    return seen[:_MAX_ITEMS]


def form_to_fields(form: Any) -> dict[str, Any]:
    """The profile fields the preferences form describes; an empty input clears its field."""
    sizes: dict[str, Any] = {}
    for kind in _SIZE_KINDS:
        raw = str(form.get(f"size_{kind}") or "").strip()
        if raw in LETTER_SIZES or not raw:
            sizes[kind] = raw or None
        else:
            sizes[kind] = _number(raw, f"size_{kind}", integer=kind != "shoes")
    frequency = {}
    for channel in ("email", "sms"):
        value = str(form.get(f"frequency_{channel}") or "")
        if value and value not in FREQUENCIES:
            raise FormProblem(f"frequency_{channel}")
        frequency[channel] = value or None
    low = _number(str(form.get("price_min") or ""), "price_min")
    high = _number(str(form.get("price_max") or ""), "price_max")
    currency = str(form.get("currency") or "")
    price_range: dict[str, Any] | None = None
    if low is not None or high is not None:
        if currency not in CURRENCIES:
            raise FormProblem("currency")
        price_range = {"min": low or 0, "max": high if high is not None else low, "currency": currency}
    brands = str(form.get("brands") or "")
    language = str(form.get("preferred_language") or "")
    if language and language not in LANGUAGES:
        raise FormProblem("preferred_language")
    return {
        "sizes": sizes,
        "favourite_categories": _text_list([str(value) for value in form.getall("categories", [])]) or None,
        "favourite_brands": _text_list(brands.split(",")) or None,
        "topics": _text_list([str(value) for value in form.getall("topics", [])]) or None,
        "price_range": price_range,
        "contact_frequency": frequency,
        "preferred_language": language or None,
    }


def changed_fields(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """Only what differs from the stored profile is sent: nothing is rewritten for nothing."""
    changes: dict[str, Any] = {}
    for name, value in wanted.items():
        held = current.get(name)
        if name in ("sizes", "contact_frequency"):
            held = held if isinstance(held, dict) else {}
            merged = {key: item for key, item in (value or {}).items() if held.get(key) != item}
            if merged:
                changes[name] = merged
        elif held != value:
            changes[name] = value
    return changes


class PreferencesController(Controller):
    path = "/preferences"
    include_in_schema = False
    dependencies = {"session": Provide(provide_session)}

    def _form(
        self, request: Request[Any, Any, Any], session: Session, fields: dict[str, Any], **extra: Any
    ) -> Template:
        extra_categories = [item for item in fields.get("favourite_categories") or [] if item not in CATEGORIES]
        extra_topics = [item for item in fields.get("topics") or [] if item not in TOPICS]
        return render(
            request,
            "preferences.html.j2",
            session=session,
            fields=fields,
            sizes=fields.get("sizes") or {},
            frequency=fields.get("contact_frequency") or {},
            price=fields.get("price_range") or {},
            letter_sizes=LETTER_SIZES,
            frequencies=FREQUENCIES,
            currencies=CURRENCIES,
            categories=[*CATEGORIES, *extra_categories],
            topics=[*TOPICS, *extra_topics],
            **extra,
        )

    @get("/")
    async def show(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template:
        profile = await gateway_of(state).profile(session.token)
        return self._form(request, session, profile_values(profile), saved=request.query_params.get("saved"))

    @post("/")
    async def save(self, request: Request[Any, Any, Any], state: State, session: Session) -> Template | Redirect:
        gateway = gateway_of(state)
        form = await request.form()
        profile = await gateway.profile(session.token)
        current = profile_values(profile)
        try:
            wanted = form_to_fields(form)
        except FormProblem as problem:
            return self._form(request, session, current, status_code=422, invalid=str(problem))
        changes = changed_fields(current, wanted)
        if changes:
            try:
                await gateway.update_profile(session.token, changes)
            except GatewayError as error:
                if error.status not in (400, 422):
                    raise
                return self._form(request, session, current, status_code=422, invalid="gateway")
        response = see_other("/preferences?saved=1")
        language = wanted.get("preferred_language")
        if language in LANGUAGES and language != session.lang:
            sealer: SessionSealer = state.sealer
            response.cookies.append(sealer.cookie(session.with_lang(language), secure=is_secure(request)))
        return response
