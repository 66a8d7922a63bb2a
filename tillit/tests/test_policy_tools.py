"""``tillit policy explain`` and ``diff``: what a policy releases, and what a change to it adds or removes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tillit.cli import main
from tillit.policy import Policy, load_policy
from tillit.policy_cli import SubjectCounts
from tillit.policy_tools import Change, diff_policies, explain
from tillit.settings import REPO_ROOT

ADS = "marketing.advertising.third_party.targeted"
EMAIL = "marketing.communications.email"
ORDERS = "essential.service.notifications.email"
SHIPPED = load_policy(REPO_ROOT / "policies")


def edited(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    """A copy of the shipped policy directory with ``replacements`` applied to release.yaml."""
    directory = tmp_path / "proposed"
    shutil.copytree(REPO_ROOT / "policies", directory)
    release = directory / "release.yaml"
    text = release.read_text(encoding="utf-8")
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    release.write_text(text, encoding="utf-8")
    return directory


def verdicts(policy: Policy, channel: str, purpose: str) -> dict[str, tuple[str, str | None]]:
    return {v.field: (v.verdict, v.transform) for v in explain(policy, channel, purpose).fields}


def test_explain_names_category_may_use_basis_and_transform_for_each_field() -> None:
    explanation = explain(SHIPPED, "ads", ADS)
    assert explanation.registered
    assert (explanation.legal_basis, explanation.consent_lasts, explanation.rate_limit) == ("consent", "P6M", "50/s")
    assert "Global Privacy Control" in explanation.condition
    found = verdicts(SHIPPED, "ads", ADS)
    assert found["email"] == ("released", "sha256_email")
    assert found["first_name"] == ("withheld", None)
    assert found["style"] == ("withheld", None), "quiz traits are explained too"
    email = next(v for v in explanation.fields if v.field == "email")
    assert f"purposes.{ADS}.may_use" in email.why
    assert "channels.ads.transforms.email" in email.why
    assert email.source.endswith("release.yaml")
    phone = next(v for v in explanation.fields if v.field == "phone")
    assert "user.contact.phone_number is not permitted" in phone.why


def test_explain_of_a_purpose_the_channel_is_not_registered_for_withholds_everything() -> None:
    explanation = explain(SHIPPED, "sms", EMAIL, "email")
    assert not explanation.registered
    (verdict,) = explanation.fields
    assert verdict.verdict == "withheld"
    assert "not registered" in verdict.why
    assert "403" in verdict.why


def test_explain_says_a_contract_purpose_needs_no_consent() -> None:
    explanation = explain(SHIPPED, "email", ORDERS, "first_name")
    assert explanation.fields[0].verdict == "released"
    assert "no consent needed" in explanation.condition


def test_the_same_policy_changes_nothing() -> None:
    assert diff_policies(SHIPPED, SHIPPED) == []


def test_diff_lists_added_and_removed_releases_and_transform_changes(tmp_path: Path) -> None:
    proposed = load_policy(
        edited(
            tmp_path,
            ("    may_use: [user.contact.email]\n", "    may_use: [user.contact.email, user.contact.phone_number]\n"),
            ("transforms: {email: sha256_email}", "transforms: {phone: sha256_phone}"),
            (
                "    may_use: [user.contact.email, user.name.first, user.demographic.language]",
                "    may_use: [user.contact.email, user.demographic.language]",
            ),
        )
    )
    changes = {(c.channel, c.purpose, c.field): c for c in diff_policies(SHIPPED, proposed)}
    assert set(changes) == {("ads", ADS, "phone"), ("ads", ADS, "email"), ("email", ORDERS, "first_name")}
    added = changes["ads", ADS, "phone"]
    assert (added.kind, added.new_transform, added.legal_basis) == ("added", "sha256_phone", "consent")
    hashed = changes["ads", ADS, "email"]
    assert (hashed.kind, hashed.old_transform, hashed.new_transform) == ("transform_changed", "sha256_email", None)
    removed = changes["email", ORDERS, "first_name"]
    assert (removed.kind, removed.legal_basis) == ("removed", "contract")


def test_diff_notices_a_channel_gaining_a_purpose_and_a_changed_legal_basis(tmp_path: Path) -> None:
    proposed = load_policy(
        edited(
            tmp_path,
            (
                "    purposes: [marketing.communications.sms]\n",
                f"    purposes: [marketing.communications.sms, {ORDERS}]\n",
            ),
            ("    legal_basis: contract\n", "    legal_basis: legitimate_interest\n"),
        )
    )
    changes = diff_policies(SHIPPED, proposed)
    sms = sorted(c.field for c in changes if c.channel == "sms")
    assert sms == ["email", "first_name", "preferred_language"]
    assert all(c.kind == "added" and c.legal_basis == "legitimate_interest" for c in changes if c.channel == "sms")
    rebased = [c for c in changes if c.channel == "email"]
    assert {c.field for c in rebased} == {"email", "first_name", "preferred_language"}
    assert all(c.kind == "basis_changed" and c.old_legal_basis == "contract" for c in rebased)


def test_counts_are_per_legal_basis() -> None:
    counts = SubjectCounts(consents={ADS: 7}, profiles=40)
    change = Change("ads", ADS, "phone", "added", "consent")
    assert counts.for_change(change) == 7
    assert counts.for_change(Change("email", ORDERS, "first_name", "removed", "contract")) == 40
    assert SubjectCounts().for_change(change) is None


def test_explain_command_exits_non_zero_naming_an_unknown_channel_purpose_or_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for arguments, problem in (
        (["--channel", "fax", "--purpose", ADS], "unknown channel 'fax'"),
        (["--channel", "ads", "--purpose", "marketing.pigeons"], "unknown purpose 'marketing.pigeons'"),
        (["--channel", "ads", "--purpose", ADS, "--field", "iban"], "unknown field 'iban'"),
    ):
        assert main(["policy", "explain", *arguments]) != 0
        assert problem in capsys.readouterr().err


def test_explain_command_prints_words_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "explain", "--channel", "ads", "--purpose", ADS, "--field", "email"]) == 0
    text = capsys.readouterr().out
    assert "RELEASED as sha256_email" in text
    assert "release.yaml" in text
    assert main(["policy", "explain", "--channel", "ads", "--purpose", ADS, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["fields"][0] == {**document["fields"][0], "field": "email", "verdict": "released"}


def test_diff_command_without_reachable_services_prints_changes_and_why_counts_are_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILLIT_DATA_DIR", str(tmp_path / "no-data"))
    proposed = edited(tmp_path, ("transforms: {email: sha256_email}", "transforms: {}"))
    assert main(["policy", "diff", str(REPO_ROOT / "policies"), str(proposed)]) == 0
    text = capsys.readouterr().out
    assert f"~ ads x {ADS} x email transform sha256_email -> none  (? subjects with active consent)" in text
    assert "subject counts unknown" in text
    assert "signing key" in text
    assert main(["policy", "diff", str(REPO_ROOT / "policies"), str(proposed), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [change["field"] for change in document["changes"]] == ["email"]
    assert document["changes"][0]["subjects"] is None
    assert document["counts_unknown"]


def test_diff_command_refuses_an_invalid_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = edited(tmp_path, ("transforms: {email: sha256_email}", "transforms: {email: rot13}"))
    assert main(["policy", "diff", str(REPO_ROOT / "policies"), str(broken)]) == 1
    assert "unknown transform 'rot13'" in capsys.readouterr().err
