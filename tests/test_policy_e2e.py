"""The policy at full strength on real processes: transforms, rate limits, reload, diff counts."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform import RunningPlatform, running_platform
from tillit.cli import main
from tillit.policy_cli import count_subjects
from tillit.settings import REPO_ROOT, load_settings

pytestmark = pytest.mark.slow

ADS = "marketing.advertising.third_party.targeted"
SMS = "marketing.communications.sms"
RELOAD_WAIT = 15.0


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    """A platform on SQLite with its own copy of the policy (edited by the tests) and limits as written."""
    root = tmp_path_factory.mktemp("policy-platform")
    policy_dir = root / "policies"
    shutil.copytree(REPO_ROOT / "policies", policy_dir)
    release = policy_dir / "release.yaml"
    release.write_text(release.read_text().replace("rate_limit: 20/s", "rate_limit: 3/min"))
    extra_env = {
        "TILLIT_POLICY_DIR": str(policy_dir),
        "TILLIT_RATE_LIMIT_SCALE": "1",
        "TILLIT_POLICY_RELOAD_SECONDS": "0.5",
    }
    with running_platform("sqlite", root / "data", extra_env) as running:
        running.add_channel("ads", ["profiles:read"])
        running.add_channel("sms", ["profiles:read"])
        yield running


def release(running: RunningPlatform, channel: str, subject: str, purpose: str) -> httpx.Response:
    return httpx.get(
        f"{running.gateway}/v1/subjects/{subject}/profile", params={"purpose": purpose}, headers=running.auth(channel)
    )


def eventually(condition: Callable[[], Any], timeout: float = RELOAD_WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)


def edit_policy(running: RunningPlatform, old: str, new: str) -> None:
    release_yaml = Path(running.env["TILLIT_POLICY_DIR"]) / "release.yaml"
    text = release_yaml.read_text()
    assert old in text, old
    release_yaml.write_text(text.replace(old, new))


def test_the_ads_channel_receives_only_the_hashed_email(own: RunningPlatform) -> None:
    subject = own.new_shopper({"email": "Mia.V@Example.com", "first_name": "Mia"}, consents=((ADS, "give"),))
    response = release(own, "ads", subject, ADS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fields"] == {"email": hashlib.sha256(b"mia.v@example.com").hexdigest()}
    assert body["transformed"] == {"email": "sha256_email"}
    assert {"field": "first_name", "reason": "category_not_permitted"} in body["withheld"]


def test_a_burst_beyond_the_channel_limit_gets_429_with_retry_after(own: RunningPlatform) -> None:
    subject = own.new_shopper({"phone": "+46701234567"}, consents=((SMS, "give"),))
    answers = [release(own, "sms", subject, SMS) for _ in range(4)]
    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    refused = answers[3]
    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "urn:tillit:problem:rate-limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 20
    other_channel = own.new_shopper({"email": "x@example.com"}, consents=((ADS, "give"),))
    assert release(own, "ads", other_channel, ADS).status_code == 200, "limits are per client"


def test_an_edited_policy_takes_effect_and_an_invalid_edit_keeps_the_one_in_force(own: RunningPlatform) -> None:
    subject = own.new_shopper({"email": "lena@example.com", "first_name": "Lena Maria"}, consents=((ADS, "give"),))
    assert "first_name" not in release(own, "ads", subject, ADS).json()["fields"]

    edit_policy(own, "    may_use: [user.contact.email]\n", "    may_use: [user.contact.email, user.name.first]\n")
    edit_policy(own, "transforms: {email: sha256_email}", "transforms: {email: sha256_email, first_name: first_word}")
    released = eventually(lambda: release(own, "ads", subject, ADS).json()["fields"].get("first_name"))
    assert released == "Lena"

    log = own.platform.log_path("gateway")
    assert log is not None
    edit_policy(own, "first_name: first_word}", "first_name: initials}")
    refused = eventually(lambda: "unknown transform 'initials'" in log.read_text(errors="replace"))
    assert refused, "the gateway logs why it refused the edit"
    assert "channels.ads.transforms.first_name" in log.read_text(errors="replace")
    still = release(own, "ads", subject, ADS)
    assert still.status_code == 200
    assert still.json()["fields"]["first_name"] == "Lena", "the policy in force stays"

    edit_policy(own, "    may_use: [user.contact.email, user.name.first]\n", "    may_use: [user.contact.email]\n")
    edit_policy(own, "first_name: initials}", "first_name: first_word}")
    withheld = eventually(lambda: "first_name" not in release(own, "ads", subject, ADS).json()["fields"])
    assert withheld


def stack_settings(stack: RunningPlatform) -> Any:
    return load_settings("gateway", stack.env)


def test_policy_diff_counts_subjects_whose_legal_basis_holds_now(
    stack: RunningPlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = count_subjects(stack_settings(stack), {ADS}, profiles=True)
    assert before.unknown == []
    assert before.consents is not None
    assert before.profiles is not None
    stack.new_shopper({"email": "a1@example.com"}, consents=((ADS, "give"),))
    stack.new_shopper({"email": "a2@example.com"}, consents=((ADS, "give"),))
    stack.new_shopper({"email": "a3@example.com"}, consents=((ADS, "give"), (ADS, "withdraw")))
    after = count_subjects(stack_settings(stack), {ADS}, profiles=True)
    assert after.consents is not None
    assert after.profiles is not None
    assert after.consents[ADS] - before.consents[ADS] == 2
    assert after.profiles - before.profiles == 3

    proposed = tmp_path / "proposed"
    shutil.copytree(REPO_ROOT / "policies", proposed)
    text = (proposed / "release.yaml").read_text()
    (proposed / "release.yaml").write_text(text.replace("transforms: {email: sha256_email}", "transforms: {}"))
    for key, value in stack.env.items():
        if key.startswith("TILLIT_"):
            monkeypatch.setenv(key, value)
    assert main(["policy", "diff", str(REPO_ROOT / "policies"), str(proposed), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["counts_unknown"] == []
    (change,) = document["changes"]
    assert (change["channel"], change["field"], change["kind"]) == ("ads", "email", "transform_changed")
    assert change["subjects"] >= after.consents[ADS]
