"""Release audit, decisions and disabled clients, end to end on real processes (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.platform import Channel, RunningPlatform
from tests.test_release_e2e import ASTRID, EMAIL, assert_problem, profile

pytestmark = pytest.mark.slow

PROFILED = "personalize.content.profiled"
SHOPPER = {**ASTRID, "favourite_categories": ["dresses", "knitwear"]}


def auditor(stack: RunningPlatform) -> dict[str, str]:
    if "auditor" not in stack.channels:
        stack.add_channel("email", ["audit:read"], name="auditor")
    return stack.auth("auditor")


def audit(stack: RunningPlatform, **params: Any) -> httpx.Response:
    return httpx.get(f"{stack.gateway}/v1/audit/releases", params=params, headers=auditor(stack))


def decisions(stack: RunningPlatform, subject: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack.gateway}/v1/subjects/{subject}/decisions",
        params={"purpose": PROFILED, **params},
        headers=stack.auth("web"),
    )


def tillit(stack: RunningPlatform, *arguments: str) -> subprocess.CompletedProcess[str]:
    """The ``tillit`` command against this platform's databases and keys."""
    return subprocess.run(
        [sys.executable, "-m", "tillit", *arguments],
        env={**stack.env, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_releases_and_refusals_can_be_read_back_from_the_audit(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    released = profile(stack, subject).json()
    refused = profile(stack, subject, purpose="marketing.communications.sms")
    assert_problem(refused, 403, "purpose-not-registered")

    response = audit(stack, subject_id=subject)
    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    assert response.json()["next_cursor"] is None
    assert first["release_id"] == released["release_id"]
    assert first["outcome"] == "released"
    assert (first["channel"], first["client_id"]) == ("email", stack.channels["email"].client_id)
    assert sorted(first["released"]) == sorted(released["fields"])
    assert first["withheld"] == [{"field": "phone", "reason": "category_not_permitted"}]
    assert len(first["consent_event_ids"]) == 1
    assert (second["outcome"], second["purpose"], second["released"]) == (
        "refused",
        "marketing.communications.sms",
        [],
    )
    assert second["at"] >= first["at"]

    paged = audit(stack, subject_id=subject, limit=1).json()
    assert [item["release_id"] for item in paged["items"]] == [released["release_id"]]
    rest = audit(stack, subject_id=subject, limit=1, after=paged["next_cursor"]).json()
    assert [item["outcome"] for item in rest["items"]] == ["refused"]

    assert_problem(audit(stack), 422, "audit-filter-required")
    assert_problem(audit(stack, channel="email", limit=501), 400, "validation")
    assert_problem(audit(stack, channel=["email", "sms"]), 400, "validation")
    forbidden = httpx.get(
        f"{stack.gateway}/v1/audit/releases", params={"subject_id": subject}, headers=stack.auth("email")
    )
    assert_problem(forbidden, 403, "insufficient-scope")


def test_a_decision_uses_only_consented_fields_and_changes_when_consent_is_withdrawn(stack: RunningPlatform) -> None:
    segment = f"dresses-{uuid.uuid4().hex[:8]}"
    httpx.post(
        f"{stack.url('rules')}/v1/segments",
        json={
            "key": segment,
            "title": "Likes dresses",
            "purpose": PROFILED,
            "conditions": [{"field": "favourite_categories", "op": "contains", "value": "dresses"}],
        },
        headers=stack.service_headers("rules"),
    ).raise_for_status()
    subject = stack.new_shopper(SHOPPER, consents=((PROFILED, "give"),))

    decided = decisions(stack, subject, page="home", visit_count=3, slots="hero,sidebar")
    assert decided.status_code == 200, decided.text
    body = decided.json()
    assert segment in body["segments"]
    assert body["variants"] == {}  # no slot of these names is defined
    assert 0 < len(body["products"]) <= 24  # no candidates given: the demo catalogue's first page
    assert "dresses" not in decided.text.replace(segment, "")  # the decision, never the profile
    [entry] = audit(stack, subject_id=subject).json()["items"]
    assert entry["release_id"] == body["release_id"]
    assert "favourite_categories" in entry["released"]

    withdrawn = httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/consents",
        json={"purpose": PROFILED, "action": "withdraw"},
        headers=stack.auth("web"),
    )
    assert withdrawn.status_code == 201, withdrawn.text
    after = decisions(stack, subject)
    assert after.status_code == 200
    assert segment not in after.json()["segments"]

    assert_problem(decisions(stack, subject, purpose=EMAIL), 403, "purpose-not-registered")
    assert_problem(decisions(stack, subject, slots="a," * 10 + "b"), 400, "validation")
    assert_problem(decisions(stack, subject, visit_count=-1), 400, "validation")
    assert_problem(decisions(stack, subject, page=["home", "product"]), 400, "validation")
    no_scope = httpx.get(
        f"{stack.gateway}/v1/subjects/{subject}/decisions", params={"purpose": EMAIL}, headers=stack.auth("email")
    )
    assert_problem(no_scope, 403, "insufficient-scope")


def test_rules_service_down_means_503_and_nothing_released(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(SHOPPER, consents=((PROFILED, "give"),))
    stack.platform.stop_one("rules")
    try:
        response = decisions(stack, subject)
        assert_problem(response, 503, "rules-unavailable")
        assert "dresses" not in response.text
    finally:
        stack.platform.start_one("rules")
        stack.platform.wait_ready(components=["rules"])
    assert audit(stack, subject_id=subject).json()["items"] == []
    assert decisions(stack, subject).status_code == 200


def _wait_for_status(stack: RunningPlatform, subject: str, client: Channel, status: int) -> httpx.Response:
    """The disabled set is refreshed every 2 s on every gateway: wait at most a few intervals."""
    deadline = time.monotonic() + 10
    while True:
        response = profile(stack, subject, headers={"Authorization": f"Bearer {client.token}"})
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_disabled_client_gets_no_token_and_its_issued_tokens_stop_working(stack: RunningPlatform) -> None:
    subject = stack.new_shopper(ASTRID, consents=((EMAIL, "give"),))
    client = stack.add_channel("email", ["profiles:read"], name="to-disable")
    assert profile(stack, subject, headers=stack.auth("to-disable")).status_code == 200

    disabled = tillit(stack, "clients", "disable", client.client_id)
    assert disabled.returncode == 0, disabled.stderr
    refused = _wait_for_status(stack, subject, client, 401)
    assert_problem(refused, 401, "unauthorized")
    assert "disabled" in refused.json()["detail"]
    assert "astrid@example.com" not in refused.text
    token = httpx.post(
        f"{stack.gateway}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
    )
    assert token.status_code in (400, 401)
    assert "access_token" not in token.json()
    listed = tillit(stack, "clients", "list", "--json")
    assert any(c["client_id"] == client.client_id and c["disabled"] for c in json.loads(listed.stdout))

    assert tillit(stack, "clients", "enable", client.client_id).returncode == 0
    assert _wait_for_status(stack, subject, client, 200).status_code == 200

    rotated = tillit(stack, "clients", "rotate-secret", client.client_id, "--json")
    assert rotated.returncode == 0, rotated.stderr
    old = httpx.post(
        f"{stack.gateway}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client.client_id, client.client_secret),
    )
    assert old.status_code == 401
    new_secret = json.loads(rotated.stdout)["client_secret"]
    new = httpx.post(
        f"{stack.gateway}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, new_secret)
    )
    assert new.status_code == 200
