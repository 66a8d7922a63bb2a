"""Consent features a channel meets through the gateway, against the running processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.platform import RunningPlatform

pytestmark = pytest.mark.slow

ADS = "marketing.advertising.third_party.targeted"
PROFILED = "personalize.content.profiled"


def capture(
    stack: RunningPlatform, channel: str, subject: str, body: dict[str, object], **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{stack.gateway}/v1/subjects/{subject}/consents", json=body, headers={**stack.auth(channel), **headers}
    )


def history(stack: RunningPlatform, subject: str) -> list[dict[str, object]]:
    response = httpx.get(
        f"{stack.url('consent')}/v1/subjects/{subject}/history", headers=stack.service_headers("consent")
    )
    response.raise_for_status()
    return response.json()["events"]


def test_a_retried_capture_with_the_same_idempotency_key_is_recorded_once(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "retry@example.com"})
    body = {"purpose": "marketing.communications.email", "action": "withdraw"}
    key = str(uuid.uuid4())
    first = capture(stack, "email", subject, body, **{"Idempotency-Key": key})
    second = capture(stack, "email", subject, body, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 201
    assert first.json()["event"]["id"] == second.json()["event"]["id"]
    assert len(history(stack, subject)) == 1
    other = capture(stack, "email", subject, {**body, "action": "give"}, **{"Idempotency-Key": key})
    assert other.status_code == 422
    assert other.json()["type"] == "urn:tillit:problem:idempotency-key-reused"


def test_a_gpc_signal_passed_on_by_a_channel_refuses_sale_and_sharing(stack: RunningPlatform) -> None:
    subject = stack.new_shopper({"email": "gpc@example.com"}, consents=((ADS, "give"),))
    recorded = capture(stack, "web", subject, {"purpose": PROFILED, "action": "give"}, **{"Sec-GPC": "1"})
    assert recorded.status_code == 201, recorded.text
    actions = {(event["purpose"], event["action"], event["source"]) for event in history(stack, subject)}
    assert (ADS, "refused", "gpc") in actions
    ads = httpx.get(
        f"{stack.gateway}/v1/subjects/{subject}/profile", params={"purpose": ADS}, headers=stack.auth("ads")
    ).json()
    assert ads["fields"] == {}


def test_a_receipt_verifies_offline_against_the_keys_the_gateway_publishes(
    stack: RunningPlatform, tmp_path: Path
) -> None:
    subject = stack.new_shopper({"email": "receipt@example.com"})
    recorded = capture(stack, "web", subject, {"purpose": PROFILED, "action": "give", "evidence": {"language": "et"}})
    receipt = recorded.json()["receipt"]
    path = tmp_path / "receipt.jws"
    path.write_text(receipt)
    keys = f"{stack.gateway}/.well-known/consent-receipt-keys.json"
    good = subprocess.run(
        [sys.executable, "-m", "tillit", "receipt", "verify", str(path), "--jwks", keys],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert subject in good.stdout
    header, payload, signature = receipt.split(".")
    path.write_text(f"{header}.{payload[:-2]}{'AA' if not payload.endswith('AA') else 'BB'}.{signature}")
    bad = subprocess.run(
        [sys.executable, "-m", "tillit", "receipt", "verify", str(path), "--jwks", keys],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "NOT verified" in bad.stderr


def test_ledger_verify_over_http_sees_one_snapshot_while_writes_go_on(stack: RunningPlatform) -> None:
    subjects = [stack.new_shopper({"email": f"v{i}@example.com"}, consents=((PROFILED, "give"),)) for i in range(3)]
    url = f"{stack.url('consent')}/v1/ledger/verify"

    async def run() -> list[dict[str, object]]:
        async with httpx.AsyncClient(headers=stack.service_headers("consent"), timeout=30) as client:

            async def write(subject: str) -> None:
                for action in ("withdraw", "give") * 5:
                    body = {"purpose": PROFILED, "action": action, "source": "preference_page"}
                    (
                        await client.post(f"{stack.url('consent')}/v1/subjects/{subject}/events", json=body)
                    ).raise_for_status()

            async def verify() -> list[dict[str, object]]:
                reports = []
                for _ in range(5):
                    response = await client.get(url)
                    response.raise_for_status()
                    reports.append(response.json())
                return reports

            *_, reports = await asyncio.gather(*(write(subject) for subject in subjects), verify())
            return reports

    reports = asyncio.run(run())
    assert all(report["ok"] for report in reports), [r for r in reports if not r["ok"]]


def test_ledger_verify_from_the_command_line(stack: RunningPlatform) -> None:
    stack.new_shopper({"email": "cli@example.com"}, consents=((PROFILED, "give"), (PROFILED, "withdraw")))
    result = subprocess.run(
        [sys.executable, "-m", "tillit", "ledger", "verify"], env=stack.env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "ledger intact" in result.stdout


def test_a_dpo_imports_a_csv_of_old_consents_from_the_command_line(stack: RunningPlatform, tmp_path: Path) -> None:
    subject = f"imported-{uuid.uuid4().hex[:8]}"
    good = tmp_path / "consents.csv"
    good.write_text(
        "subject_id,purpose,action,collected_at\n"
        f"{subject},{PROFILED},give,2026-03-01T09:00:00Z\n"
        f"{subject},{ADS},refuse,2026-03-01T09:00:00Z\n"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(f"subject_id,purpose,action,collected_at\n{subject},{PROFILED},maybe,2026-03-01T09:00:00Z\n")

    def run(path: Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "tillit", "consents", "import", str(path)]
        return subprocess.run(command, env=stack.env, capture_output=True, text=True, check=False)

    refused = run(bad)
    assert refused.returncode == 1
    assert "line 2" in refused.stderr
    first, again = run(good), run(good)
    assert first.returncode == again.returncode == 0, first.stderr
    assert "2 consents imported" in first.stdout
    assert "0 consents imported, 2 already there" in again.stdout
    events = history(stack, subject)
    assert sorted((event["purpose"], event["action"], event["source"]) for event in events) == sorted(
        [(PROFILED, "given", "import"), (ADS, "refused", "import")]
    )
