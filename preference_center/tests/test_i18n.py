"""Every message on the pages is translated in every language, and dates and numbers follow the language."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from preference_center.i18n import LANGUAGES, LOCALES_DIR, catalog, negotiate

PLACEHOLDER = re.compile(r"%\((\w+)\)s")
PACKAGE = Path(__file__).resolve().parent.parent
METHODS = [("**/templates/**.j2", "jinja2"), ("**.py", "python")]
OPTIONS = {"**/templates/**.j2": {"extensions": "jinja2.ext.i18n", "trim_blocks": "True", "lstrip_blocks": "True"}}


def page_messages() -> set[str]:
    found = extract_from_dir(str(PACKAGE), METHODS, options_map=OPTIONS, keywords={"_": None, "N_": None})
    return {message for _, _, message, _, _ in found if isinstance(message, str)}


@pytest.mark.parametrize("language", [language for language in LANGUAGES if language != "en"])
def test_every_message_is_translated(language: str) -> None:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as file:
        translated = {message.id: message.string for message in read_po(file) if message.id and not message.fuzzy}
    missing = sorted(message for message in page_messages() if not translated.get(message))
    assert not missing, f"{language}: untranslated {missing}"
    for source, text in translated.items():
        assert sorted(PLACEHOLDER.findall(str(text))) == sorted(PLACEHOLDER.findall(str(source))), source


def test_dates_and_numbers_follow_the_language() -> None:
    assert catalog("sv").number(39.5) == "39,5"
    assert catalog("en").number(39.5) == "39.5"
    assert catalog("et").date("2026-11-24T10:00:00Z") == "24. november 2026"
    assert catalog("sv").money(2500, "SEK").replace("\u00a0", " ") == "2 500 kr"
    assert catalog("sv").gettext("Withdraw") == "Återkalla"
    assert catalog("nb").gettext("Withdraw") == "Trekk tilbake"
    assert catalog("et").gettext("Withdraw") == "Võta tagasi"


def test_accept_language_is_negotiated() -> None:
    assert negotiate("sv-SE,sv;q=0.9,en;q=0.8") == "sv"
    assert negotiate("de-DE,nn;q=0.5") == "nb"
    assert negotiate("fr, en;q=0.1") == "en"
    assert negotiate("et;q=0, sv;q=0.2") == "sv"
    assert negotiate(None) == "en"
