"""The named transforms channels may apply, and how the policy validates transforms and rate limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tillit.policy import PolicyError, RateLimit, load_policy
from tillit.settings import REPO_ROOT
from tillit.tests.test_policy import VALID
from tillit.transforms import apply_transform, first_word, sha256_email, sha256_phone


def test_sha256_email_hashes_the_trimmed_lower_cased_address() -> None:
    expected = hashlib.sha256(b"astrid.lind@example.com").hexdigest()
    assert sha256_email("  Astrid.Lind@Example.COM \n") == expected
    assert sha256_email("astrid.lind@example.com") == expected
    assert sha256_email("other@example.com") != expected


def test_sha256_phone_hashes_the_digits_of_the_e164_number() -> None:
    expected = hashlib.sha256(b"46701234567").hexdigest()
    assert sha256_phone("+46 70-123 45 67") == expected
    assert sha256_phone("+46701234567") == expected
    assert sha256_phone("+4791234567") != expected


@pytest.mark.parametrize(
    ("value", "expected"), [("Anna Maria", "Anna"), ("  Lars ", "Lars"), ("Kadri", "Kadri"), ("", "")]
)
def test_first_word_keeps_only_the_first_word(value: str, expected: str) -> None:
    assert first_word(value) == expected


def test_apply_transform_maps_lists_item_by_item() -> None:
    assert apply_transform("first_word", ["Anna Maria", "Bo Ek"]) == ["Anna", "Bo"]
    assert apply_transform("sha256_phone", 46701234567) == hashlib.sha256(b"46701234567").hexdigest()


@pytest.mark.parametrize(
    ("text", "requests", "per_seconds"),
    [("50/s", 50, 1), ("600/min", 600, 60), ("100/10s", 100, 10), ("3000/h", 3000, 3600), (" 5 / 2 min ", 5, 120)],
)
def test_rate_limits_are_written_as_requests_per_time(text: str, requests: int, per_seconds: int) -> None:
    assert RateLimit.parse(text) == RateLimit(requests, per_seconds)


@pytest.mark.parametrize("text", ["", "50", "50/day", "0/s", "-1/s", "fast", "50/0s", "50 per second"])
def test_malformed_rate_limits_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a rate limit"):
        RateLimit.parse(text)


def test_the_shipped_policy_gives_ads_only_the_hashed_email_and_every_channel_a_rate_limit() -> None:
    policy = load_policy(REPO_ROOT / "policies")
    assert policy.channels["ads"].transforms == {"email": "sha256_email"}
    assert all(channel.rate is not None for channel in policy.channels.values())


CHANNEL = "  email: {purposes: [marketing.communications.email]}"


@pytest.mark.parametrize(
    ("channel", "key", "problem"),
    [
        (
            "  email: {purposes: [marketing.communications.email], transforms: {email: md5}}",
            "channels.email.transforms.email",
            "unknown transform 'md5'; known transforms: first_word, sha256_email, sha256_phone",
        ),
        (
            "  email: {purposes: [marketing.communications.email], transforms: {phone: sha256_phone}}",
            "channels.email.transforms.phone",
            "'phone' is not a field or trait declared in the policy",
        ),
        (
            "  email: {purposes: [marketing.communications.email], rate_limit: 50/day}",
            "channels.email.rate_limit",
            "'50/day' is not a rate limit",
        ),
        (
            "  email: {purposes: [marketing.communications.email], rate_limit: 50}",
            "channels[...].rate_limit",
            "Expected `str | null`, got `int`",
        ),
    ],
)
def test_bad_transforms_and_rate_limits_name_the_file_the_key_and_the_problem(
    tmp_path: Path, channel: str, key: str, problem: str
) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(VALID.replace(CHANNEL, channel), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert caught.value.file == str(path)
    assert key in caught.value.key
    assert problem in caught.value.problem


def test_transforms_and_rate_limits_load(tmp_path: Path) -> None:
    channel = (
        "  email: {purposes: [marketing.communications.email], transforms: {email: sha256_email}, rate_limit: 9/min}"
    )
    (tmp_path / "release.yaml").write_text(VALID.replace(CHANNEL, channel), encoding="utf-8")
    loaded = load_policy(tmp_path).channels["email"]
    assert loaded.transforms == {"email": "sha256_email"}
    assert loaded.rate == RateLimit(9, 60)
    assert loaded.rate.per_second == pytest.approx(0.15)
