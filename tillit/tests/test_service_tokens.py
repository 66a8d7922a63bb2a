"""Every route an internal service has under ``/v1/`` refuses a call without a valid service token.

The check is made once for the whole app (see :func:`tillit.app.create_app`), so this walks the
routes the apps really have: a controller added later is covered without being listed here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from services.consent.app import create_app as create_consent
from services.preferences.app import create_app as create_preferences
from services.rules.app import create_app as create_rules
from tillit.keys import SERVICE_TOKEN_KEY, load_private_key
from tillit.service_tokens import PROTECTED_PREFIX, ServiceTokenIssuer
from tillit.testing import fresh_component_environment

SERVICES: dict[str, Callable[[], Litestar]] = {
    "consent": create_consent,
    "preferences": create_preferences,
    "rules": create_rules,
}
_PARAMETER = re.compile(r"\{[^}:]+:([a-z]+)\}")
_SAMPLE = {"int": "1", "uuid": "00000000-0000-4000-8000-000000000000"}


@pytest.fixture
def keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fresh_component_environment(tmp_path, monkeypatch)


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest, keys_dir: Path) -> Iterator[tuple[str, TestClient[Any]]]:
    with TestClient(SERVICES[request.param]()) as client:
        yield request.param, client


def protected_calls(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) of every handler under ``/v1/``, path parameters filled with a plausible value."""
    calls = []
    for route in app.routes:
        if not route.path.startswith(PROTECTED_PREFIX):
            continue
        path = _PARAMETER.sub(lambda match: _SAMPLE.get(match.group(1), "x1"), route.path)
        calls += [(method, path) for method in sorted(route.methods) if method != "OPTIONS"]
    return calls


def test_every_v1_route_needs_a_service_token_for_this_service(
    service: tuple[str, TestClient[Any]], keys_dir: Path
) -> None:
    name, client = service
    calls = protected_calls(client.app)
    assert len(calls) >= 5, calls
    issuer = ServiceTokenIssuer(load_private_key(keys_dir, SERVICE_TOKEN_KEY))
    wrong_audience = issuer.headers_for("someone-else")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}, wrong_audience):
        for method, path in calls:
            response = client.request(method, path, headers=headers, json={} if method in ("POST", "PATCH") else None)
            assert response.status_code == 401, (name, method, path, headers, response.text)
            assert response.json()["type"] == "urn:tillit:problem:unauthorized"
    right = issuer.headers_for(name)
    method, path = next(call for call in calls if call[0] == "GET")
    assert client.request(method, path, headers=right).status_code != 401


def test_health_needs_no_token(service: tuple[str, TestClient[Any]]) -> None:
    _, client = service
    assert client.get("/health/live").status_code == 200


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/v1/subjects/j%0A/consents", "path"),  # the case schemathesis found: answered 200 before
        ("/v1/subjects/j%09k/consents", "path"),
        ("/v1/subjects/j/consents?as_of=2026-01-01T00:00:00Z%0A", "query"),
        ("/v1/subjects/j/consents?as_of=%7f", "query"),
    ],
)
def test_a_control_character_in_the_path_or_query_is_a_400(keys_dir: Path, path: str, source: str) -> None:
    issuer = ServiceTokenIssuer(load_private_key(keys_dir, SERVICE_TOKEN_KEY), ttl_seconds=60)
    with TestClient(create_consent()) as client:
        answer = client.get(path, headers=issuer.headers_for("consent"))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"][0]["source"] == source
    named = "subject_id" if source == "path" else "as_of"
    assert answer.json()["detail"] == f"{source} parameter {named}: control characters are not allowed"
