"""The release rule, as a pure function of policy, profile and consent state.

A field is released only when the channel is registered for the purpose, the field's data
category is one the purpose may use, and the purpose's legal basis holds for the subject now.
Everything else is withheld, with the reason and without the value. A released field is handed
over in the form the channel's policy transforms it to (e.g. the hashed e-mail for ads), under
its own name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from tillit.policy import Policy, Purpose
from tillit.problems import Forbidden, Unprocessable
from tillit.transforms import apply_transform

__all__ = [
    "ConsentView",
    "Decision",
    "ReleasePlanner",
    "Withheld",
    "WithheldReason",
    "check_channel_purpose",
    "decide",
]

WithheldReason = Literal[
    "category_not_permitted",
    "field_not_in_policy",
    "no_consent",
    "consent_withdrawn",
    "consent_expired",
    "consent_pending",
    "notice_changed",
    "objection_recorded",
]


class ConsentView(msgspec.Struct, frozen=True):
    """What the gateway needs to know of one purpose's consent state."""

    status: str
    active: bool
    event_id: str
    expires_at: datetime | None = None
    needs_reconsent: bool = False


class Withheld(msgspec.Struct, frozen=True):
    field: str
    reason: WithheldReason


class Decision(msgspec.Struct, frozen=True):
    released: dict[str, Any]
    withheld: list[Withheld]
    consent_event_id: str | None
    transformed: dict[str, str] = {}
    """Released field -> the transform its value went through."""


def _basis_failure(policy: Policy, purpose: str, consent: ConsentView | None, now: datetime) -> WithheldReason | None:
    basis = policy.purposes[purpose].legal_basis
    if basis == "consent":
        if consent is None or consent.status == "refused":
            return "no_consent"
        if consent.status == "withdrawn":
            return "consent_withdrawn"
        if consent.status == "expired" or (consent.expires_at is not None and consent.expires_at <= now):
            return "consent_expired"
        if consent.status == "pending":
            return "consent_pending"
        if consent.needs_reconsent:
            return "notice_changed"
        if not consent.active or consent.status != "given":
            return "no_consent"
        return None
    if basis == "legitimate_interest" and consent is not None and consent.status == "withdrawn":
        return "objection_recorded"
    return None


def check_channel_purpose(policy: Policy, channel: str, purpose: str) -> Purpose:
    """Rule 1: the purpose is declared (else 422) and the channel is registered for it (else 403)."""
    declared = policy.purposes.get(purpose)
    if declared is None:
        raise Unprocessable(f"purpose {purpose!r} is not declared in the policy", slug="unknown-purpose")
    registered = policy.channels.get(channel)
    if registered is None or purpose not in registered.purposes:
        raise Forbidden(f"channel {channel!r} is not registered for purpose {purpose!r}", slug="purpose-not-registered")
    return declared


class _Plan(msgspec.Struct, frozen=True):
    """The verdict on every field of a profile, before any value is looked at."""

    kept: tuple[tuple[str, str | None], ...]
    """Released fields in order, each with the transform its value goes through (None: as it is)."""
    withheld: tuple[Withheld, ...]
    transformed: dict[str, str]


def _channel_transforms(policy: Policy, channel: str | None) -> Mapping[str, str]:
    return policy.channels[channel].transforms if channel is not None and channel in policy.channels else {}


def _plan(
    policy: Policy,
    purpose: str,
    transforms: Mapping[str, str],
    names: Iterable[str],
    failure: WithheldReason | None,
) -> _Plan:
    may_use = set(policy.purposes[purpose].may_use)
    kept: list[tuple[str, str | None]] = []
    withheld: list[Withheld] = []
    for name in sorted(names):
        # Quiz-derived traits are released on the same terms as fields: by their data category.
        field = policy.fields.get(name) or policy.traits.get(name)
        if field is None:
            withheld.append(Withheld(name, "field_not_in_policy"))
        elif field.category not in may_use:
            withheld.append(Withheld(name, "category_not_permitted"))
        elif failure is not None:
            withheld.append(Withheld(name, failure))
        else:
            kept.append((name, transforms.get(name)))
    transformed = {name: transform for name, transform in kept if transform is not None}
    return _Plan(tuple(kept), tuple(withheld), transformed)


def _apply(
    plan: _Plan, profile: Mapping[str, Any], consent: ConsentView | None, failure: WithheldReason | None
) -> Decision:
    released = {
        name: profile[name] if transform is None else apply_transform(transform, profile[name])
        for name, transform in plan.kept
    }
    relied_on = consent.event_id if consent is not None and failure is None and released else None
    return Decision(released, list(plan.withheld), relied_on, plan.transformed)


def decide(
    policy: Policy,
    purpose: str,
    profile: Mapping[str, Any],
    consent: ConsentView | None,
    now: datetime,
    channel: str | None = None,
) -> Decision:
    """Apply the release rule; the caller has already checked the channel may ask for ``purpose``.

    With ``channel``, released values go through the transforms the policy names for that channel.
    """
    failure = _basis_failure(policy, purpose, consent, now)
    return _apply(
        _plan(policy, purpose, _channel_transforms(policy, channel), profile, failure), profile, consent, failure
    )


class ReleasePlanner:
    """:func:`decide` for many profiles of one purpose and channel (an audience), with the same answers.

    Which fields are released, withheld (and why) or transformed depends only on the profile's field
    names and on whether the legal basis holds, so that verdict is worked out once per distinct pair and
    only the values are copied per profile. At most ``max_plans`` pairs are kept.
    """

    def __init__(self, policy: Policy, purpose: str, channel: str | None = None, max_plans: int = 4096) -> None:
        self._policy = policy
        self._purpose = purpose
        self._transforms = _channel_transforms(policy, channel)
        self._max_plans = max_plans
        self._plans: dict[tuple[tuple[str, ...], WithheldReason | None], _Plan] = {}

    def decide(self, profile: Mapping[str, Any], consent: ConsentView | None, now: datetime) -> Decision:
        return self.decide_with_verdict(profile, consent, now)[0]

    def decide_with_verdict(
        self, profile: Mapping[str, Any], consent: ConsentView | None, now: datetime
    ) -> tuple[Decision, object]:
        """:meth:`decide`, and the verdict it applied: one object for every profile with the same field
        names and basis outcome (while kept), so that a caller can work out once what depends only on
        it (the released names, the withheld fields and reasons)."""
        failure = _basis_failure(self._policy, self._purpose, consent, now)
        key = (tuple(profile), failure)
        plan = self._plans.get(key)
        if plan is None:
            plan = _plan(self._policy, self._purpose, self._transforms, key[0], failure)
            if len(self._plans) < self._max_plans:
                self._plans[key] = plan
        return _apply(plan, profile, consent, failure), plan
