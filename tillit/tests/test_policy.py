"""The release policy loads only when every key is known and every reference resolves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tillit.policy import ConsentDuration, PolicyError, load_policy
from tillit.settings import REPO_ROOT

VALID = """
fields:
  email: {category: user.contact.email}
  shoe_size: {category: user.demographic.profile}
purposes:
  marketing.communications.email:
    title: Newsletter
    legal_basis: consent
    consent_lasts: P24M
    may_use: [user.contact.email, user.demographic.profile]
channels:
  email: {purposes: [marketing.communications.email]}
"""


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    return directory


def write(directory: Path, text: str, name: str = "release.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_policy_loads() -> None:
    policy = load_policy(REPO_ROOT / "policies")
    assert "email" in policy.fields
    assert policy.purposes["marketing.communications.email"].legal_basis == "consent"
    assert set(policy.channels) >= {"email", "sms", "web", "ads"}


def test_a_valid_policy_loads(policy_dir: Path) -> None:
    write(policy_dir, VALID)
    policy = load_policy(policy_dir)
    assert policy.fields["shoe_size"].category == "user.demographic.profile"
    assert policy.channels["email"].purposes == ["marketing.communications.email"]


@pytest.mark.parametrize(
    ("broken", "key", "problem"),
    [
        (VALID.replace("user.contact.email}", "user.contact.mail}"), "fields.email.category", "'user.contact.mail'"),
        (
            VALID.replace("may_use: [user.contact.email,", "may_use: [user.nope,"),
            "purposes.marketing.communications.email.may_use",
            "'user.nope' is not a fideslang data category",
        ),
        (
            VALID.replace("  marketing.communications.email:\n", "  marketing.carrier_pigeon:\n"),
            "purposes.marketing.carrier_pigeon",
            "not a fideslang data use",
        ),
        (
            VALID.replace("{purposes: [marketing.communications.email]}", "{purposes: [personalize]}"),
            "channels.email.purposes",
            "'personalize' is not a purpose declared in the policy",
        ),
        (VALID.replace("    consent_lasts: P24M\n", ""), "consent_lasts", "needs consent_lasts"),
        (VALID.replace("P24M", "two years"), "consent_lasts", "is not a duration"),
        (VALID.replace("legal_basis: consent", "legal_basis: vibes"), "legal_basis", "vibes"),
        (VALID.replace("    title: Newsletter\n", "    title: Newsletter\n    colour: red\n"), "purposes", "colour"),
        ("fields: [unclosed", "(file)", "not valid YAML"),
    ],
)
def test_a_bad_policy_names_the_file_the_key_and_the_problem(
    policy_dir: Path, broken: str, key: str, problem: str
) -> None:
    path = write(policy_dir, broken)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(path)
    assert key in caught.value.key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_a_key_defined_in_two_files_is_refused(policy_dir: Path) -> None:
    write(policy_dir, VALID, "a.yaml")
    second = write(policy_dir, "fields:\n  email: {category: user.contact.email}\n", "b.yaml")
    with pytest.raises(PolicyError, match="already defined in") as caught:
        load_policy(policy_dir)
    assert caught.value.file == str(second)
    assert caught.value.key == "fields.email"


def test_an_empty_directory_is_refused(policy_dir: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \*\.yaml policy files"):
        load_policy(policy_dir)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P24M", datetime(2026, 1, 31, 12, tzinfo=UTC), datetime(2028, 1, 31, 12, tzinfo=UTC)),
        ("P1M", datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC)),
        ("P1Y", datetime(2028, 2, 29, tzinfo=UTC), datetime(2029, 2, 28, tzinfo=UTC)),
        ("P30D", datetime(2026, 12, 15, tzinfo=UTC), datetime(2027, 1, 14, tzinfo=UTC)),
        ("P1Y6M", datetime(2026, 8, 1, tzinfo=UTC), datetime(2028, 2, 1, tzinfo=UTC)),
    ],
)
def test_consent_lifetimes_count_calendar_months(text: str, start: datetime, end: datetime) -> None:
    assert ConsentDuration.parse(text).after(start) == end


@pytest.mark.parametrize("text", ["", "P", "24M", "P2W", "PT1H"])
def test_durations_other_than_years_months_days_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        ConsentDuration.parse(text)
