"""The preferences API over HTTP: 400 vs 422 naming the field, history, export and erasure answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.preferences.api import ProfileController, SubjectDataController
from services.preferences.app import MIGRATIONS
from tillit.app import create_app
from tillit.keys import SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key, load_public_keys
from tillit.policy import load_policy
from tillit.problems import PROBLEM_MEDIA_TYPE
from tillit.service_tokens import ServiceTokenIssuer, ServiceTokenVerifier
from tillit.settings import load_settings

pytestmark = pytest.mark.anyio

PROFILE = "/v1/subjects/astrid/profile"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    settings = load_settings("preferences", {"TILLIT_DATA_DIR": str(tmp_path)})
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    verifier = ServiceTokenVerifier(load_public_keys(settings.keys_dir, SERVICE_TOKEN_KEY), audience="preferences")
    issuer = ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY))
    app = create_app(
        settings,
        title="preferences under test",
        description="The preferences controllers.",
        route_handlers=[ProfileController, SubjectDataController],
        migrations=MIGRATIONS,
        state={"policy": load_policy(settings.policy_dir), "service_token_verifier": verifier},
    )
    async with AsyncTestClient(app=app) as client:
        client.headers.update(issuer.headers_for("preferences"))
        yield client


def problem(response: Any, status: int, slug: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_MEDIA_TYPE
    assert response.json()["type"] == f"urn:tillit:problem:{slug}"
    detail: str = response.json()["detail"]
    return detail


async def test_schema_mismatches_are_400_and_refusals_422_each_naming_the_field(client: AsyncTestClient[Any]) -> None:
    unknown = await client.patch(PROFILE, json={"fields": {"shoe_sizes": 38}, "source": "import"})
    assert "shoe_sizes" in problem(unknown, 400, "validation")
    bad_size = await client.patch(PROFILE, json={"fields": {"sizes": {"dresses": 37}}, "source": "import"})
    assert "$.fields.sizes.dresses" in problem(bad_size, 400, "validation")
    lenient = await client.patch(PROFILE, json={"fields": {"sizes": {"shoes": "38"}}, "source": "import"})
    problem(lenient, 400, "validation")
    prices = {"min": 900, "max": 100, "currency": "SEK"}
    refused = await client.patch(PROFILE, json={"fields": {"price_range": prices}, "source": "import"})
    assert problem(refused, 422, "invalid-price-range").startswith("fields.price_range")
    email = await client.patch(PROFILE, json={"fields": {"email": "astrid@shop.invalid"}, "source": "import"})
    assert problem(email, 422, "invalid-email").startswith("fields.email")
    problem(await client.get(PROFILE), 404, "profile-not-found")


async def test_history_export_and_erasure_over_http(client: AsyncTestClient[Any]) -> None:
    for size in (38, 39, 40):
        body = {"fields": {"sizes": {"shoes": size}}, "source": "preference_page"}
        assert (await client.patch(PROFILE, json=body)).status_code == 200
    page = (await client.get(f"{PROFILE}/history", params={"limit": 2})).json()
    assert ([c["new_value"]["shoes"] for c in page["changes"]], page["more"]) == ([40, 39], True)
    problem(await client.get(f"{PROFILE}/history", params={"limit": 201}), 400, "validation")
    export = (await client.get("/v1/subjects/astrid/export")).json()
    assert export["sections"]["profile"]["fields"] == {"sizes": {"shoes": 40}}
    assert len(export["sections"]["profile_history"]) == 3
    erased = await client.delete("/v1/subjects/astrid")
    assert erased.status_code == 200
    assert erased.json()["rows_erased"] == {"profile_change": 3, "profile_value": 1, "profile_subject": 1}
    again = await client.delete("/v1/subjects/astrid")
    assert (again.status_code, set(again.json()["rows_erased"].values())) == (200, {0})
    empty = (await client.get("/v1/subjects/astrid/export")).json()["sections"]
    assert empty == {"profile": {"fields": {}, "provenance": {}}, "profile_history": []}


async def test_every_endpoint_needs_the_gateway_token(client: AsyncTestClient[Any]) -> None:
    del client.headers["Authorization"]
    for method, path in (("GET", PROFILE), ("GET", "/v1/subjects/astrid/export"), ("DELETE", "/v1/subjects/astrid")):
        problem(await client.request(method, path), 401, "unauthorized")
