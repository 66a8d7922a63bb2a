"""Patterns mean on the server what the published JSON Schema says: no string with a trailing newline
passes a ``^...$`` pattern, and the documents publish each pattern as ECMA-262 reads it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest
from litestar.testing import TestClient

from tillit.launcher import APP_FACTORIES
from tillit.openapi import struct_components
from tillit.patterns import STRING_END, exact, inner, published
from tillit.settings import REPO_ROOT
from tillit.testing import fresh_component_environment
from tillit.types import PURPOSE_PATTERN, SUBJECT_ID_PATTERN, SubjectId

API_COMPONENTS = ("consent", "preferences", "rules", "gateway")


def test_a_trailing_newline_fails_an_exact_pattern_as_it_fails_in_ecma() -> None:
    loose = Annotated[str, msgspec.Meta(pattern=r"^[a-z]+$")]
    assert msgspec.convert("abc\n", loose) == "abc\n"  # why exact() exists: Python's $ lets it through
    strict = Annotated[str, msgspec.Meta(pattern=exact(r"^[a-z]+$"))]
    assert msgspec.convert("abc", strict) == "abc"
    for value in ("abc\n", "abc\n\n", "abc\r\n", "\n"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(value, strict)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'"shopper-1\\n"', type=SubjectId)


def test_published_and_inner_forms() -> None:
    assert published(SUBJECT_ID_PATTERN) == r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
    assert inner(PURPOSE_PATTERN) == r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*"
    assert re.fullmatch(inner(PURPOSE_PATTERN), "marketing.email")
    quoted = f"Expected `str` matching regex {SUBJECT_ID_PATTERN!r} - at `$.subject_id`"
    assert published(quoted) == f"Expected `str` matching regex {published(SUBJECT_ID_PATTERN)!r} - at `$.subject_id`"
    with pytest.raises(ValueError, match="anchored"):
        exact("[a-z]+")


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


def _loose_anchor(pattern: str) -> bool:
    """A ``$`` (not escaped, not in a class) that no :data:`STRING_END` follows."""
    rest = pattern.replace("$" + STRING_END, "")
    return re.search(r"(?<!\\)\$", re.sub(r"\[(?:\\.|[^\]\\])*\]", "", rest)) is not None


@pytest.mark.parametrize("component", API_COMPONENTS)
def test_every_pattern_is_exact_on_the_server_and_ecma_in_the_document(
    component: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_component_environment(tmp_path, monkeypatch)
    shutil.copytree(REPO_ROOT / "policies", tmp_path / "policies")
    monkeypatch.setenv("TILLIT_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("TILLIT_RULES_DEFINITIONS_DIR", "")
    module, _, factory = APP_FACTORIES[component].partition(":")
    app = getattr(__import__(module, fromlist=[factory]), factory)()
    with TestClient(app) as client:
        checked = [*_patterns(app.openapi_schema.to_schema()), *_patterns(struct_components(app))]
        document = client.get("/schema/openapi.json").json()
    assert len(checked) > 5
    assert [pattern for pattern in checked if _loose_anchor(pattern)] == []
    published_patterns = list(_patterns(document))
    assert published_patterns
    assert [pattern for pattern in published_patterns if STRING_END in pattern] == []
