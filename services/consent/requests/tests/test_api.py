"""The data-subject request API over HTTP: status codes, problem details, the service token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.consent.app import MIGRATIONS
from services.consent.requests.api import RequestController
from tillit.app import create_app
from tillit.keys import SERVICE_TOKEN_KEY, ensure_signing_key, load_private_key, load_public_keys
from tillit.policy import load_policy
from tillit.problems import PROBLEM_MEDIA_TYPE
from tillit.service_tokens import ServiceTokenIssuer, ServiceTokenVerifier
from tillit.settings import load_settings

pytestmark = pytest.mark.anyio

EMAIL = "marketing.communications.email"


class Api:
    def __init__(self, client: AsyncTestClient[Any], headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def post(self, path: str, body: Any, expect: int) -> dict[str, Any]:
        response = await self.client.post(path, json=body, headers=self.headers)
        assert response.status_code == expect, response.text
        return _checked(response, expect)

    async def get(self, path: str, expect: int = 200, **params: Any) -> dict[str, Any]:
        response = await self.client.get(path, params=params, headers=self.headers)
        assert response.status_code == expect, response.text
        return _checked(response, expect)

    async def create(self, **fields: Any) -> dict[str, Any]:
        body = {"subject_id": "astrid", "type": "access", "channel": "preference_center"} | fields
        return await self.post("/v1/requests", body, 201)


def _checked(response: Any, status: int) -> dict[str, Any]:
    document: dict[str, Any] = response.json()
    media_type = response.headers["content-type"].split(";")[0]
    if status >= 400:
        assert media_type == PROBLEM_MEDIA_TYPE
        assert document["status"] == status
        assert document["type"].startswith("urn:tillit:problem:")
        assert document["detail"]
    else:
        assert media_type == "application/json"
    return document


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = load_settings("consent", {"TILLIT_DATA_DIR": str(tmp_path)})
    ensure_signing_key(settings.keys_dir, SERVICE_TOKEN_KEY)
    verifier = ServiceTokenVerifier(load_public_keys(settings.keys_dir, SERVICE_TOKEN_KEY), audience="consent")
    issuer = ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY))
    app = create_app(
        settings,
        title="data-subject requests under test",
        description="RequestController alone.",
        route_handlers=[RequestController],
        migrations=MIGRATIONS,
        state={"policy": load_policy(settings.policy_dir)},
        service_tokens=verifier,
    )
    async with AsyncTestClient(app=app) as client:
        yield Api(client, issuer.headers_for("consent"))


async def test_a_request_is_created_and_read_back(api: Api) -> None:
    created = await api.create(
        type="objection", purposes=[EMAIL], received_at="2024-01-31T09:30:00Z", actor="dpo:anna", details="by post"
    )
    assert created["status"] == "received"
    assert created["received_at"] == "2024-01-31T09:30:00Z"
    assert created["due_at"] == "2024-02-29T09:30:00Z"
    assert created["overdue"] is True
    assert created["purposes"] == [EMAIL]
    assert created["extension"] is None
    assert [step["to_status"] for step in created["history"]] == ["received"]
    assert await api.get(f"/v1/requests/{created['id']}") == created


async def test_the_lifecycle_over_http(api: Api) -> None:
    created = await api.create()
    path = f"/v1/requests/{created['id']}"
    await api.post(f"{path}/transitions", {"to": "verified", "actor": "dpo:anna"}, 200)
    extended = await api.post(f"{path}/extension", {"months": 2, "reason": "large archive", "actor": "dpo:anna"}, 200)
    assert extended["extension"]["months"] == 2
    assert extended["due_at"] == extended["extension"]["until"]
    second = await api.post(f"{path}/extension", {"months": 1, "reason": "still busy", "actor": "dpo:anna"}, 409)
    assert second["type"] == "urn:tillit:problem:already-extended"
    await api.post(f"{path}/transitions", {"to": "in_progress", "actor": "dpo:anna"}, 200)
    done = await api.post(f"{path}/transitions", {"to": "completed", "actor": "dpo:anna", "note": "sent"}, 200)
    assert (done["status"], done["resolution"], done["version"]) == ("completed", "sent", 5)
    assert [step["action"] for step in done["history"]] == [
        "received",
        "transition",
        "extension",
        "transition",
        "transition",
    ]


async def test_an_illegal_transition_is_a_conflict_naming_both_statuses(api: Api) -> None:
    created = await api.create()
    problem = await api.post(f"/v1/requests/{created['id']}/transitions", {"to": "completed", "actor": "dpo:anna"}, 409)
    assert problem["type"] == "urn:tillit:problem:illegal-transition"
    assert "'received'" in problem["detail"]
    assert "'completed'" in problem["detail"]
    assert problem["instance"] == f"/v1/requests/{created['id']}/transitions"


async def test_a_rejection_without_a_reason_is_unprocessable(api: Api) -> None:
    created = await api.create()
    problem = await api.post(f"/v1/requests/{created['id']}/transitions", {"to": "rejected", "actor": "dpo:anna"}, 422)
    assert problem["type"] == "urn:tillit:problem:reason-required"


@pytest.mark.parametrize(
    "body",
    [
        {"subject_id": "astrid", "type": "access", "channel": "email", "priority": "high"},
        {"subject_id": "astrid", "type": "access", "channel": "email", "details": "x" * 2001},
        {"subject_id": "astrid", "type": "portability", "channel": "email"},
        {"subject_id": "astrid", "type": "access"},
        {"subject_id": "not valid!", "type": "access", "channel": "email"},
        {"subject_id": "astrid", "type": "objection", "channel": "email", "purposes": ["Not A Purpose"]},
        {"subject_id": "astrid", "type": "access", "channel": "email", "received_at": "2024-01-31T09:30:00"},
    ],
    ids=["unknown-field", "oversized-details", "unknown-type", "no-channel", "bad-subject", "bad-purpose", "naive"],
)
async def test_bodies_outside_the_schema_are_refused(api: Api, body: dict[str, Any]) -> None:
    problem = await api.post("/v1/requests", body, 400)
    assert problem["type"] == "urn:tillit:problem:validation"


async def test_transition_and_extension_bodies_are_strict(api: Api) -> None:
    path = f"/v1/requests/{(await api.create())['id']}"
    await api.post(f"{path}/transitions", {"to": "verified", "actor": "dpo:anna", "by": "x"}, 400)
    await api.post(f"{path}/transitions", {"to": "done", "actor": "dpo:anna"}, 400)
    await api.post(f"{path}/extension", {"months": 3, "reason": "busy", "actor": "dpo:anna"}, 400)
    await api.post(f"{path}/extension", {"months": 1, "actor": "dpo:anna"}, 400)
    await api.post(f"{path}/extension", {"months": 1, "reason": "x" * 1001, "actor": "dpo:anna"}, 400)


async def test_an_unknown_purpose_is_unprocessable(api: Api) -> None:
    body = {"subject_id": "astrid", "type": "objection", "channel": "email", "purposes": ["marketing.owl_post"]}
    problem = await api.post("/v1/requests", body, 422)
    assert problem["type"] == "urn:tillit:problem:unknown-purpose"
    assert "marketing.owl_post" in problem["detail"]


async def test_without_a_service_token_nothing_is_read_or_written(api: Api) -> None:
    created = await api.create()
    for response in (
        await api.client.get("/v1/requests"),
        await api.client.get(f"/v1/requests/{created['id']}"),
        await api.client.post("/v1/requests", json={"subject_id": "x", "type": "access", "channel": "email"}),
        await api.client.post(
            f"/v1/requests/{created['id']}/transitions",
            json={"to": "verified", "actor": "dpo:anna"},
            headers={"Authorization": "Bearer not-a-token"},
        ),
    ):
        assert response.status_code == 401, response.text
        assert _checked(response, 401)["type"] == "urn:tillit:problem:unauthorized"
    assert (await api.get(f"/v1/requests/{created['id']}"))["version"] == 1


async def test_an_unknown_request_is_not_found(api: Api) -> None:
    missing = uuid.uuid4()
    assert (await api.get(f"/v1/requests/{missing}", 404))["type"] == "urn:tillit:problem:request-not-found"
    await api.post(f"/v1/requests/{missing}/transitions", {"to": "verified", "actor": "dpo:anna"}, 404)
    await api.post(f"/v1/requests/{missing}/extension", {"months": 1, "reason": "busy", "actor": "dpo:anna"}, 404)


async def test_listing_filters_and_pages(api: Api) -> None:
    ids = [(await api.create(subject_id=f"s{index}"))["id"] for index in range(5)]
    erasure = await api.create(subject_id="lars", type="erasure")
    await api.post(f"/v1/requests/{ids[0]}/transitions", {"to": "verified", "actor": "dpo:anna"}, 200)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 4} | ({"cursor": cursor} if cursor else {})
        page = await api.get("/v1/requests", **params)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([*ids, erasure["id"]])
    assert len(seen) == 6

    assert [i["id"] for i in (await api.get("/v1/requests", type="erasure"))["items"]] == [erasure["id"]]
    assert [i["id"] for i in (await api.get("/v1/requests", status="verified"))["items"]] == [ids[0]]
    assert [i["id"] for i in (await api.get("/v1/requests", subject_id="s3"))["items"]] == [ids[3]]
    assert (await api.get("/v1/requests", overdue="true"))["items"] == []
    assert len((await api.get("/v1/requests", overdue="false"))["items"]) == 6


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 400),
        ({"limit": 201}, 400),
        ({"status": "lost"}, 400),
        ({"type": "portability"}, 400),
        ({"subject_id": "not valid!"}, 400),
        ({"cursor": "AAAA"}, 422),
    ],
)
async def test_list_parameters_are_bounded(api: Api, params: dict[str, Any], status: int) -> None:
    await api.get("/v1/requests", status, **params)


async def test_the_openapi_document_declares_the_problems(api: Api) -> None:
    response = await api.client.get("/schema/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    transitions = paths["/v1/requests/{request_id}/transitions"]["post"]["responses"]
    assert {"200", "400", "401", "404", "409", "422"} <= set(transitions)
    assert set(paths["/v1/requests"]) == {"get", "post"}
