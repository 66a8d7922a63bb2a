"""``tillit policy explain | diff``: the release policy for the people who review it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import httpx
import msgspec

from tillit.keys import SERVICE_TOKEN_KEY, load_private_key
from tillit.policy import Policy, PolicyError, load_policy
from tillit.policy_tools import Change, Explanation, diff_policies, explain
from tillit.service_tokens import ServiceTokenIssuer
from tillit.settings import Settings, load_settings

__all__ = ["SubjectCounts", "add_policy_commands", "count_subjects", "run_policy_command"]

_COUNT_TIMEOUT = 5.0


class SubjectCounts(msgspec.Struct):
    """Subjects whose legal basis holds now: per consent purpose, and holders of a profile."""

    consents: dict[str, int] | None = None
    profiles: int | None = None
    unknown: list[str] = []
    """Why a count is missing (a service did not answer, no signing key, ...)."""

    def for_change(self, change: Change) -> int | None:
        if change.legal_basis == "consent":
            return None if self.consents is None else self.consents.get(change.purpose)
        return self.profiles


def add_policy_commands(commands: Any) -> None:
    policy = commands.add_parser("policy", help="the release policy")
    actions = policy.add_subparsers(dest="action", required=True)
    actions.add_parser("check", help="validate policies/*.yaml")
    explaining = actions.add_parser(
        "explain", help="field by field: released or withheld for a channel asking for a purpose, and why"
    )
    explaining.add_argument("--channel", required=True)
    explaining.add_argument("--purpose", required=True)
    explaining.add_argument("--field", help="only this field or trait")
    explaining.add_argument("--policy-dir", type=Path, help="default: TILLIT_POLICY_DIR")
    explaining.add_argument("--json", action="store_true", help="print the explanation as JSON")
    diffing = actions.add_parser(
        "diff", help="which channel x purpose x field releases a change adds or removes, and how many subjects"
    )
    diffing.add_argument("old", type=Path, help="policy directory in force")
    diffing.add_argument("new", type=Path, help="policy directory proposed")
    diffing.add_argument("--json", action="store_true", help="print the changes as JSON")


def run_policy_command(args: argparse.Namespace) -> int:
    """``explain`` or ``diff`` (``check`` is the ``tillit`` command's own, ``tillit up`` runs it too)."""
    if args.action == "explain":
        return _explain(args.policy_dir, args.channel, args.purpose, args.field, args.json)
    return _diff(args.old, args.new, args.json)


def _load(directory: Path) -> Policy | None:
    try:
        return load_policy(directory)
    except PolicyError as exc:
        print(f"policy invalid: {exc}", file=sys.stderr)
        return None


def _explain(policy_dir: Path | None, channel: str, purpose: str, field: str | None, as_json: bool) -> int:
    directory = policy_dir or load_settings("gateway").policy_dir
    policy = _load(directory)
    if policy is None:
        return 1
    for kind, name, known in (
        ("channel", channel, policy.channels),
        ("purpose", purpose, policy.purposes),
        ("field", field, {**policy.fields, **policy.traits}),
    ):
        if name is not None and name not in known:
            print(
                f"unknown {kind} {name!r} in the policy at {directory}; known: {', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
    explanation = explain(policy, channel, purpose, field)
    if as_json:
        print(msgspec.json.encode(explanation).decode())
    else:
        print(_explanation_text(explanation, directory))
    return 0


def _explanation_text(explanation: Explanation, directory: Path) -> str:
    lines = [
        f"Policy {directory} ({', '.join(Path(source).name for source in explanation.sources)})",
        f"Channel {explanation.channel} asking for purpose {explanation.purpose}:",
    ]
    if explanation.registered:
        lines.append(f"  legal basis {explanation.legal_basis}: fields are released {explanation.condition}.")
    else:
        lines.append("  the channel is not registered for this purpose: the gateway refuses every such request.")
    limit = explanation.rate_limit
    lines.append(f"  rate limit: {f'{limit} per OAuth client of the channel' if limit else 'none'}")
    width = max((len(verdict.field) for verdict in explanation.fields), default=0)
    for verdict in explanation.fields:
        label = verdict.verdict.upper() + (f" as {verdict.transform}" if verdict.transform else "")
        lines.append(f"  {verdict.field:<{width}}  {label}: {verdict.why} [{Path(verdict.source).name}]")
    return "\n".join(lines)


def count_subjects(settings: Settings, purposes: set[str], profiles: bool) -> SubjectCounts:
    """Ask the consent and preferences services how many subjects each legal basis holds for now."""
    counts = SubjectCounts()
    if not purposes and not profiles:
        return counts
    try:
        issuer = ServiceTokenIssuer(load_private_key(settings.keys_dir, SERVICE_TOKEN_KEY))
    except Exception as exc:
        counts.unknown.append(f"no service token: cannot read the signing key in {settings.keys_dir} ({exc})")
        return counts
    with httpx.Client(timeout=_COUNT_TIMEOUT) as client:
        for service, path, wanted in (
            ("consent", "/v1/stats/consents", bool(purposes)),
            ("preferences", "/v1/stats/subjects", profiles),
        ):
            if not wanted:
                continue
            url = f"{settings.url_of(service)}{path}"
            try:
                response = client.get(url, headers=issuer.headers_for(service))
                response.raise_for_status()
                body = response.json()
            except httpx.HTTPStatusError as exc:
                counts.unknown.append(f"the {service} service at {url} answered {exc.response.status_code}")
                continue
            except (httpx.HTTPError, ValueError) as exc:
                counts.unknown.append(f"the {service} service at {url} did not answer ({type(exc).__name__}: {exc})")
                continue
            if service == "consent":
                counts.consents = {str(key): int(value) for key, value in body["active"].items()}
                missing = sorted(purposes - set(counts.consents))
                if missing:
                    counts.unknown.append(
                        f"the consent service's policy has no consent purpose {', '.join(missing)}: not counted"
                    )
            else:
                counts.profiles = int(body["subjects"])
    return counts


def _diff(old_dir: Path, new_dir: Path, as_json: bool) -> int:
    old, new = _load(old_dir), _load(new_dir)
    if old is None or new is None:
        return 1
    changes = diff_policies(old, new)
    counts = count_subjects(
        load_settings("gateway"),
        {change.purpose for change in changes if change.legal_basis == "consent"},
        any(change.legal_basis != "consent" for change in changes),
    )
    for change in changes:
        change.subjects = counts.for_change(change)
    if as_json:
        document = {"old": str(old_dir), "new": str(new_dir), "changes": changes, "counts_unknown": counts.unknown}
        print(msgspec.json.encode(document).decode())
        return 0
    print(_diff_text(changes, counts, old_dir, new_dir))
    return 0


_SIGNS = {"added": "+", "removed": "-", "transform_changed": "~", "basis_changed": "~"}


def _diff_text(changes: list[Change], counts: SubjectCounts, old_dir: Path, new_dir: Path) -> str:
    if not changes:
        return f"no release changes from {old_dir} to {new_dir}"
    lines = [f"release changes from {old_dir} to {new_dir}:"]
    for change in changes:
        what = f"{_SIGNS[change.kind]} {change.channel} x {change.purpose} x {change.field}"
        if change.kind == "added":
            what += " released" + (f" as {change.new_transform}" if change.new_transform else "")
        elif change.kind == "removed":
            what += " no longer released"
        elif change.kind == "transform_changed":
            what += f" transform {change.old_transform or 'none'} -> {change.new_transform or 'none'}"
        if change.old_legal_basis is not None:
            what += f" legal basis {change.old_legal_basis} -> {change.legal_basis}"
        lines.append(f"  {what}  ({_affected(change)})")
    if counts.unknown:
        lines.append("subject counts unknown where marked ?:")
        lines.extend(f"  {reason}" for reason in counts.unknown)
    return "\n".join(lines)


def _affected(change: Change) -> str:
    held = "active consent" if change.legal_basis == "consent" else f"a profile ({change.legal_basis})"
    count = "?" if change.subjects is None else str(change.subjects)
    return f"{count} subjects with {held}"
