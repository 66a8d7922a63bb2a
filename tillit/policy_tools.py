"""What a policy means field by field (``tillit policy explain``) and what a change to it does (``diff``).

Both read the policy only: they say what the release rule *would* do. Whether a given shopper's
legal basis holds is the consent service's to say at request time; the explanation names the
condition, and the diff counts how many subjects meet it now.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from tillit.policy import Policy

__all__ = [
    "Change",
    "Explanation",
    "FieldVerdict",
    "basis_condition",
    "diff_policies",
    "explain",
    "release_of",
]

Verdict = Literal["released", "withheld"]
ChangeKind = Literal["added", "removed", "transform_changed", "basis_changed"]

_AS_IS = ""
"""``release_of`` for a field released without transform."""


class FieldVerdict(msgspec.Struct):
    field: str
    kind: Literal["field", "trait"]
    category: str
    verdict: Verdict
    why: str
    transform: str | None = None
    source: str = ""


class Explanation(msgspec.Struct):
    channel: str
    purpose: str
    registered: bool
    legal_basis: str
    condition: str
    consent_lasts: str | None
    rate_limit: str | None
    sources: list[str]
    fields: list[FieldVerdict]


class Change(msgspec.Struct):
    """One channel x purpose x field whose release a change adds, removes, transforms or bases differently."""

    channel: str
    purpose: str
    field: str
    kind: ChangeKind
    legal_basis: str
    old_legal_basis: str | None = None
    """Set when a release that stays rests on another legal basis than before."""
    old_transform: str | None = None
    new_transform: str | None = None
    subjects: int | None = None
    """Subjects whose legal basis for the purpose holds now; ``None`` when it could not be counted."""


def basis_condition(policy: Policy, purpose: str) -> str:
    """In plain words, when the purpose's legal basis holds for a subject."""
    declared = policy.purposes[purpose]
    if declared.legal_basis == "consent":
        words = (
            f"only while the shopper's consent to {purpose} is given"
            f"{' and confirmed from the e-mail link (double opt-in)' if declared.double_opt_in else ''}, "
            f"less than {declared.consent_lasts} old (consent_lasts), and given under a notice version that "
            "still counts"
        )
        if declared.sale_or_sharing:
            words += "; a Global Privacy Control signal refuses it"
        return words
    if declared.legal_basis == "legitimate_interest":
        return "on legitimate interest: no consent needed, unless the shopper objected (a recorded withdrawal)"
    return f"on the {declared.legal_basis.replace('_', ' ')} basis: no consent needed"


def _entry(policy: Policy, name: str) -> tuple[Literal["field", "trait"], str, str] | None:
    if name in policy.fields:
        return "field", policy.fields[name].category, policy.origins.get(f"fields.{name}", "")
    if name in policy.traits:
        return "trait", policy.traits[name].category, policy.origins.get(f"traits.{name}", "")
    return None


def release_of(policy: Policy, channel: str, purpose: str, name: str) -> str | None:
    """The transform ``name`` is released with (``""`` for none) when the basis holds, or ``None`` if never."""
    declared_channel = policy.channels.get(channel)
    declared_purpose = policy.purposes.get(purpose)
    entry = _entry(policy, name)
    if declared_channel is None or declared_purpose is None or entry is None:
        return None
    if purpose not in declared_channel.purposes or entry[1] not in declared_purpose.may_use:
        return None
    return declared_channel.transforms.get(name, _AS_IS)


def explain(policy: Policy, channel: str, purpose: str, field: str | None = None) -> Explanation:
    """Every field's verdict (or ``field``'s) for ``channel`` asking for ``purpose``; names must be declared."""
    declared_channel = policy.channels[channel]
    declared_purpose = policy.purposes[purpose]
    registered = purpose in declared_channel.purposes
    channel_key, purpose_key = f"channels.{channel}", f"purposes.{purpose}"
    condition = basis_condition(policy, purpose)
    names = [field] if field is not None else [*policy.fields, *policy.traits]
    verdicts = []
    for name in names:
        entry = _entry(policy, name)
        assert entry is not None, f"{name!r} is not declared"
        kind, category, source = entry
        transform = declared_channel.transforms.get(name)
        if not registered:
            why = (
                f"channel {channel} is not registered for purpose {purpose} ({channel_key}.purposes lists "
                f"{', '.join(declared_channel.purposes)}): the gateway refuses the request (403)"
            )
            verdicts.append(FieldVerdict(name, kind, category, "withheld", why, source=source))
        elif category not in declared_purpose.may_use:
            why = f"category {category} is not permitted: {purpose_key}.may_use does not list it"
            verdicts.append(FieldVerdict(name, kind, category, "withheld", why, source=source))
        else:
            basis = "consent" if declared_purpose.legal_basis == "consent" else declared_purpose.legal_basis
            why = f"category {category} is listed in {purpose_key}.may_use; released while the {basis} basis holds"
            if transform:
                why += f"; value transformed by {transform} ({channel_key}.transforms.{name})"
            verdicts.append(FieldVerdict(name, kind, category, "released", why, transform, source))
    sources = sorted({policy.origins.get(channel_key, ""), policy.origins.get(purpose_key, "")} - {""})
    return Explanation(
        channel=channel,
        purpose=purpose,
        registered=registered,
        legal_basis=declared_purpose.legal_basis,
        condition=condition,
        consent_lasts=declared_purpose.consent_lasts,
        rate_limit=declared_channel.rate_limit,
        sources=sources,
        fields=verdicts,
    )


def diff_policies(old: Policy, new: Policy) -> list[Change]:
    """Every channel x purpose x field whose release differs between ``old`` and ``new``, sorted."""
    changes = []
    for channel in sorted(set(old.channels) | set(new.channels)):
        purposes = {
            purpose
            for policy in (old, new)
            if channel in policy.channels
            for purpose in policy.channels[channel].purposes
        }
        for purpose in sorted(purposes):
            names = sorted({*old.fields, *old.traits, *new.fields, *new.traits})
            for name in names:
                before, after = release_of(old, channel, purpose, name), release_of(new, channel, purpose, name)
                old_basis = old.purposes[purpose].legal_basis if before is not None else None
                if before == after and (before is None or old_basis == new.purposes[purpose].legal_basis):
                    continue
                if before == after:
                    kind: ChangeKind = "basis_changed"
                elif before is None:
                    kind = "added"
                elif after is None:
                    kind = "removed"
                else:
                    kind = "transform_changed"
                basis = (old if kind == "removed" else new).purposes[purpose].legal_basis
                changes.append(
                    Change(
                        channel=channel,
                        purpose=purpose,
                        field=name,
                        kind=kind,
                        legal_basis=basis,
                        old_legal_basis=old_basis if after is not None and old_basis != basis else None,
                        old_transform=before or None,
                        new_transform=after or None,
                    )
                )
    return changes
