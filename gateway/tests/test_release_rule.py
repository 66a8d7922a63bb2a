"""The release rule as a pure function: policy category, legal basis, consent state."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from gateway.release import ConsentView, ReleasePlanner, decide
from tillit.policy import load_policy
from tillit.settings import REPO_ROOT

POLICY = load_policy(REPO_ROOT / "policies")
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
PROFILED = "personalize.content.profiled"
PROFILE = {"email": "a@example.com", "shoe_size": 38, "style": "minimal", "unknown_thing": 1}


def given(**overrides: object) -> ConsentView:
    values: dict[str, object] = {"status": "given", "active": True, "event_id": "e1", "expires_at": None}
    values.update(overrides)
    return ConsentView(**values)  # type: ignore[arg-type]


def test_fields_and_quiz_traits_are_released_by_category_with_active_consent() -> None:
    decision = decide(POLICY, PROFILED, PROFILE, given(), NOW)
    assert decision.released == {"shoe_size": 38, "style": "minimal"}
    assert {(w.field, w.reason) for w in decision.withheld} == {
        ("email", "category_not_permitted"),
        ("unknown_thing", "field_not_in_policy"),
    }
    assert decision.consent_event_id == "e1"


@pytest.mark.parametrize(
    ("consent", "reason"),
    [
        (None, "no_consent"),
        (given(status="refused", active=False), "no_consent"),
        (given(status="withdrawn", active=False), "consent_withdrawn"),
        (given(expires_at=NOW - timedelta(seconds=1)), "consent_expired"),
        (given(status="pending", active=False), "consent_pending"),
        (given(active=False, needs_reconsent=True), "notice_changed"),
    ],
)
def test_without_a_consent_that_counts_now_nothing_is_released(consent: ConsentView | None, reason: str) -> None:
    decision = decide(POLICY, PROFILED, PROFILE, consent, NOW)
    assert decision.released == {}
    assert {w.reason for w in decision.withheld if w.field in ("shoe_size", "style")} == {reason}
    assert decision.consent_event_id is None


def test_the_ads_channel_receives_the_hashed_email_under_its_own_name() -> None:
    ads = "marketing.advertising.third_party.targeted"
    profile = {"email": " Mia.Virtanen@example.com", "first_name": "Mia"}
    decision = decide(POLICY, ads, profile, given(), NOW, channel="ads")
    assert decision.released == {"email": hashlib.sha256(b"mia.virtanen@example.com").hexdigest()}
    assert decision.transformed == {"email": "sha256_email"}
    assert [(w.field, w.reason) for w in decision.withheld] == [("first_name", "category_not_permitted")]


def test_a_withheld_field_is_not_named_as_transformed_and_other_channels_get_plain_values() -> None:
    ads = "marketing.advertising.third_party.targeted"
    withheld = decide(POLICY, ads, {"email": "a@example.com"}, None, NOW, channel="ads")
    assert (withheld.released, withheld.transformed) == ({}, {})
    plain = decide(POLICY, "marketing.communications.email", {"email": "a@example.com"}, given(), NOW, channel="email")
    assert (plain.released, plain.transformed) == ({"email": "a@example.com"}, {})


CONSENTS = [
    given(),
    None,
    given(status="withdrawn", active=False),
    given(expires_at=NOW - timedelta(seconds=1)),
    given(status="pending", active=False),
    given(active=False, needs_reconsent=True),
]
PROFILES = [
    PROFILE,
    {"email": " Mia.Virtanen@example.com", "first_name": "Mia Liisa", "phone": "+3725551234"},
    {"favourite_brands": ["Acne", "Filippa K"], "email": "b@example.com", "shoe_size": 41},
    {},
    {"style": "street"},
]


@pytest.mark.parametrize(
    ("purpose", "channel"),
    [
        (PROFILED, None),
        (PROFILED, "web"),
        ("marketing.advertising.third_party.targeted", "ads"),
        ("marketing.communications.email", "email"),
        ("essential.service.notifications.email", "email"),
    ],
)
def test_the_planner_of_an_audience_decides_exactly_as_the_release_rule(purpose: str, channel: str | None) -> None:
    """Plans are cached by field names and basis: every profile, twice over, must still match ``decide``."""
    planner = ReleasePlanner(POLICY, purpose, channel, max_plans=3)
    for _ in range(2):
        for consent in CONSENTS:
            for profile in PROFILES:
                assert planner.decide(profile, consent, NOW) == decide(POLICY, purpose, profile, consent, NOW, channel)


def test_one_verdict_object_per_field_names_and_basis_outcome() -> None:
    """Audiences work out the withheld fields and the audit's JSON once per verdict object, so one object
    must never stand for two different verdicts (and a kept one is reused)."""
    planner = ReleasePlanner(POLICY, PROFILED, "web")
    first, verdict = planner.decide_with_verdict(PROFILE, given(), NOW)
    again, same = planner.decide_with_verdict({**PROFILE, "shoe_size": 40}, given(event_id="e2"), NOW)
    assert same is verdict
    assert (first.withheld, list(first.released)) == (again.withheld, list(again.released))
    _, withdrawn = planner.decide_with_verdict(PROFILE, given(status="withdrawn", active=False), NOW)
    _, fewer_fields = planner.decide_with_verdict({"style": "street"}, given(), NOW)
    assert len({id(verdict), id(withdrawn), id(fewer_fields)}) == 3
