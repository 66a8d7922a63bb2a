"""The rules service's HTTP edge: bad input is a 4xx problem naming the problem, never a 500."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from litestar.testing import TestClient

from services.rules import engine as engine_module
from services.rules.app import create_app
from services.rules.catalogue import CATEGORIES, DEPARTMENTS, Category, Department
from services.rules.tests.support import PROFILED, Rules, leaf, segment
from tillit.keys import KEY_NAMES, SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import REPO_ROOT

Client = tuple[TestClient[Any], dict[str, str]]


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Client]:
    for name in [name for name in os.environ if name.startswith("TILLIT_")]:
        monkeypatch.delenv(name)
    policy_dir = tmp_path / "policies"
    shutil.copytree(REPO_ROOT / "policies", policy_dir)
    monkeypatch.setenv("TILLIT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TILLIT_POLICY_DIR", str(policy_dir))
    monkeypatch.setenv("TILLIT_POLICY_RELOAD_SECONDS", "0.1")
    monkeypatch.setenv("TILLIT_LOG_LEVEL", "WARNING")
    for name in KEY_NAMES:
        ensure_signing_key(tmp_path / "keys", name)
    headers = ServiceTokenIssuer(load_private_key(tmp_path / "keys", SERVICE_TOKEN_KEY)).headers_for("rules")
    with TestClient(create_app()) as test_client:
        yield test_client, headers


def problem(response: Any, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == f"urn:tillit:problem:{slug}", body
    return str(body["detail"])


def test_the_demo_definitions_load_and_decide(client: Client) -> None:
    test_client, headers = client
    listed = test_client.get("/v1/definitions", headers=headers).json()
    assert {(d["kind"], d["key"]) for d in listed} >= {("segment", "sale-seeker"), ("slot", "home.hero")}
    assert test_client.get("/v1/definitions", params={"status": "disabled"}, headers=headers).json() == []
    decided = test_client.post(
        "/v1/decide",
        json={"purpose": PROFILED, "profile": {"price_sensitivity": "high"}, "context": {"slots": ["home.hero"]}},
        headers=headers,
    )
    assert decided.status_code == 200, decided.text
    assert "sale-seeker" in decided.json()["segments"]
    assert decided.json()["variants"] == {"home.hero": "editorial"}


def test_bad_definitions_and_requests_are_4xx_problems(client: Client) -> None:
    test_client, headers = client

    def save(body: Any) -> Any:
        return test_client.post("/v1/definitions", json=body, headers=headers)

    assert "email" in problem(save(segment("x", leaf("profile.email", "eq", "a"))), 422, "field-not-permitted")
    assert "'like'" in problem(save(segment("x", leaf("profile.style", "like", "a"))), 400, "validation")
    assert "kind" in problem(
        save({**segment("x", leaf("context.page", "eq", "a")), "kind": "macro"}), 400, "validation"
    )
    nul = {**segment("x", leaf("context.page", "eq", "a")), "title": "a\x00b"}
    assert "title" in problem(save(nul), 400, "validation")  # PostgreSQL text cannot hold NUL
    deep: dict[str, Any] = leaf("context.visit_count", "gte", 1)
    for _ in range(9):
        deep = {"not": deep}
    assert "deeper than 6" in problem(save(segment("x", deep)), 422, "condition-too-deep")
    nested = '{"kind":"segment","key":"x","title":"x","purpose":"p","when":' + '{"not":' * 5000 + "{}" + "}" * 5001
    response = test_client.post(
        "/v1/definitions", content=nested, headers={**headers, "content-type": "application/json"}
    )
    assert "nests too deeply" in problem(response, 400, "validation")

    product = {"id": "p1", "brand": "b", "category": "c", "department": "d", "price": 1}
    huge = test_client.post(
        "/v1/decide", json={"purpose": PROFILED, "profile": {}, "candidates": [product] * 501}, headers=headers
    )
    assert "length <= 500" in problem(huge, 400, "validation")
    for bad in ("-p2", "p 2", "p2\n\n", "p" * 65, ""):
        body = {"purpose": PROFILED, "profile": {}, "candidates": [product, {**product, "id": bad}]}
        refused = test_client.post("/v1/decide", json=body, headers=headers)
        assert "matching regex" in problem(refused, 400, "validation")
        assert refused.json()["detail"].endswith("at `$.candidates[1].id`")
    assert test_client.get("/v1/definitions/rule/nothing", headers=headers).status_code == 404


def test_a_policy_edit_disables_the_definitions_it_invalidates(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    test_client, headers = client
    release = tmp_path / "policies" / "release.yaml"
    release.write_text(
        release.read_text().replace(
            "may_use: [user.demographic.profile, user.demographic.language]", "may_use: [user.demographic.language]"
        )
    )
    deadline = time.monotonic() + 10
    while True:
        disabled = test_client.get("/v1/definitions", params={"status": "disabled"}, headers=headers).json()
        if disabled or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    keys = {(d["kind"], d["key"]) for d in disabled}
    assert ("segment", "sale-seeker") in keys
    assert ("rule", "hide-full-price-for-sale-seekers") in keys  # it reads the disabled segment
    assert ("segment", "first-visit") not in keys  # context only: still fine
    sale_seeker = next(d for d in disabled if d["key"] == "sale-seeker")
    assert "release.yaml:" in sale_seeker["problem"]
    assert any("disabled: it no longer passes the policy" in record.message for record in caplog.records)
    decided = test_client.post(
        "/v1/decide", json={"purpose": PROFILED, "profile": {"price_sensitivity": "high"}}, headers=headers
    ).json()
    assert "sale-seeker" not in decided["segments"]
    assert not any("hide-full-price" in reason["rule"] for reason in decided["reasons"])


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/definitions", "purpose", "marketing\x00"),
        ("/v1/definitions", "purpose", "Not A Purpose"),
        ("/v1/catalogue/", "department", "womens\x00"),
        ("/v1/catalogue/", "department", "true"),
        ("/v1/catalogue/", "category", "JEANS"),
    ],
)
def test_a_query_value_outside_its_pattern_is_a_400_naming_it(client: Client, path: str, name: str, value: str) -> None:
    """A NUL reached PostgreSQL as a text parameter and came back as a 500 (found by the fuzzer)."""
    test_client, headers = client
    response = test_client.get(path, params={name: value}, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert name in response.text


def test_a_repeated_query_parameter_is_a_400_naming_it(client: Client) -> None:
    """The schema declares one value; a second one would otherwise be dropped silently (every component)."""
    test_client, headers = client
    response = test_client.get("/v1/definitions?purpose=marketing&purpose=marketing", headers=headers)
    assert response.status_code == 400, response.text
    assert "query parameters given more than once: purpose" in response.json()["detail"]


def test_the_catalogue_filters_publish_exactly_the_catalogue_s_departments_and_categories() -> None:
    assert set(get_args(Department)) == set(DEPARTMENTS)
    assert set(get_args(Category)) == {category for names in CATEGORIES.values() for category in names}


def test_definitions_of_an_undeclared_purpose_are_a_422(client: Client) -> None:
    test_client, headers = client
    response = test_client.get("/v1/definitions", params={"purpose": "null"}, headers=headers)
    assert "not declared in the policy" in problem(response, 422, "unknown-purpose")


def test_a_decision_sees_definitions_saved_here_at_once_and_by_another_replica_after_the_recheck(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_client, headers = client
    body = {"purpose": PROFILED, "profile": {"favourite_categories": ["jeans"]}, "candidates": []}

    def segments() -> list[str]:
        decided = test_client.post("/v1/decide", json=body, headers=headers)
        assert decided.status_code == 200, decided.text
        return list(decided.json()["segments"])

    assert "jeans-here" not in segments()
    saved = test_client.post(
        "/v1/definitions",
        json=segment("jeans-here", leaf("profile.favourite_categories", "contains", "jeans")),
        headers=headers,
    )
    assert saved.status_code == 201, saved.text
    assert "jeans-here" in segments()

    # Another replica: its own engine on the same database; this one sees the change once it re-checks.
    monkeypatch.setattr(engine_module, "RECHECK_SECONDS", 0.0)
    replica = Rules(test_client.app.state.database)
    definition = segment("jeans-there", leaf("profile.favourite_categories", "contains", "jeans"))
    test_client.blocking_portal.call(replica.save, definition)
    assert "jeans-there" in segments()
