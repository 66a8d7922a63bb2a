"""The shopper's language: catalogs, choosing one, and dates and numbers in it.

Catalogs are Babel ``.po`` files under ``locales/<lang>/LC_MESSAGES/messages.po``, read once at
start with :func:`babel.messages.pofile.read_po` (no compile step). English is the source language.
The language is the profile's ``preferred_language``, else the best match of ``Accept-Language``,
else English; the shopper can switch at any time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, Final

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from preference_center.labels import LABELS

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "LANGUAGE_NAMES",
    "Catalog",
    "catalog",
    "install_i18n",
    "negotiate",
]

LANGUAGES: Final = ("en", "sv", "nb", "et")
DEFAULT_LANGUAGE: Final = "en"
LANGUAGE_NAMES: Final = {"en": "English", "sv": "Svenska", "nb": "Norsk bokmål", "et": "Eesti"}
LOCALES_DIR: Final = Path(__file__).parent / "locales"
_BABEL_LOCALES: Final = {"en": "en_GB", "sv": "sv_SE", "nb": "nb_NO", "et": "et_EE"}


class Catalog:
    """Messages, dates and numbers in one language."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.locale = Locale.parse(_BABEL_LOCALES[language])
        self._messages: dict[str, str] = {}
        path = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
        if language != DEFAULT_LANGUAGE and path.exists():
            with path.open("rb") as file:
                for message in read_po(file, locale=language):
                    if not message.id or not message.string or message.fuzzy:
                        continue
                    if isinstance(message.id, str):
                        self._messages[message.id] = str(message.string)
                    else:  # plural: one and other are all these languages have
                        for source, translated in zip(message.id, message.string, strict=False):
                            if translated:
                                self._messages[source] = translated

    def gettext(self, message: str, **variables: Any) -> str:
        text = self._messages.get(message, message)
        return text % variables if variables else text

    def datetime(self, value: datetime | str | None) -> str:
        if value is None:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return f"{format_datetime(moment, 'medium', tzinfo=UTC, locale=self.locale)} UTC"

    def date(self, value: datetime | str | None) -> str:
        if value is None:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_date(moment, "long", locale=self.locale)

    def number(self, value: float | int | Decimal) -> str:
        return format_decimal(value, locale=self.locale)

    def money(self, value: float | int | Decimal, currency: str) -> str:
        """Whole amounts without decimals (``2 500 kr``, ``€30``), as prices per item are given."""
        pattern = self.locale.currency_formats["standard"].pattern.replace(".00", "")
        return format_currency(value, currency, format=pattern, locale=self.locale, currency_digits=False)


@cache
def catalog(language: str) -> Catalog:
    return Catalog(language if language in LANGUAGES else DEFAULT_LANGUAGE)


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for an ``Accept-Language`` header (q-values honoured), else English."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, parameters = part.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                quality = 0.0
        ranked.append((-quality, position, tag.strip().lower()))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            continue
        primary = tag.split("-", 1)[0]
        if primary in ("no", "nn"):  # Norwegian without a written standard, or Nynorsk: Bokmål reads best
            primary = "nb"
        if primary in LANGUAGES:
            return primary
    return DEFAULT_LANGUAGE


def _catalog_of(context: Mapping[str, Any]) -> Catalog:
    return catalog(str(context.get("lang") or DEFAULT_LANGUAGE))


def install_i18n(environment: Environment) -> None:
    """Jinja's ``i18n`` extension, translating into the ``lang`` of each template's context."""

    @pass_context
    def gettext(context: Context, message: str, **variables: Any) -> str:
        return _catalog_of(context).gettext(message, **variables)

    @pass_context
    def ngettext(context: Context, singular: str, plural: str, number: int, **variables: Any) -> str:
        chosen = singular if number == 1 else plural
        return _catalog_of(context).gettext(chosen, **{"num": number, **variables})

    @pass_context
    def label(context: Context, kind: str, code: object) -> str:
        text = LABELS.get(kind, {}).get(str(code))
        return _catalog_of(context).gettext(text) if text else str(code)

    environment.globals["label"] = label
    environment.add_extension("jinja2.ext.i18n")
    environment.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
