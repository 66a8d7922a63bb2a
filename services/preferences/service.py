"""Reading and updating the preference profile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec
from email_validator import EmailNotValidError, validate_email

from services.preferences.models import ProfileValue
from services.preferences.repository import ProfileRepository
from services.preferences.schemas import PROFILE_FIELD_NAMES, Profile, ProfilePatch, Provenance
from tillit.policy import Policy
from tillit.problems import NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["ProfileService", "check_fields_declared"]


def check_fields_declared(policy: Policy) -> None:
    """Refuse to start when the profile could hold a field the policy does not govern."""
    undeclared = sorted(set(PROFILE_FIELD_NAMES) - set(policy.fields))
    if undeclared:
        raise RuntimeError(f"profile fields missing from the policy: {', '.join(undeclared)}")


class ProfileService:
    def __init__(self, repository: ProfileRepository, clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.clock = clock

    async def get(self, subject_id: str) -> Profile:
        values = await self.repository.values_for(subject_id)
        if not values:
            raise NotFound(f"no profile is held for subject {subject_id!r}", slug="profile-not-found")
        return _profile(subject_id, values)

    async def patch(self, subject_id: str, patch: ProfilePatch) -> Profile:
        changes = {
            name: value for name, value in msgspec.structs.asdict(patch.fields).items() if value is not msgspec.UNSET
        }
        if not changes:
            raise Unprocessable("the patch changes no field", slug="empty-patch")
        if isinstance(changes.get("email"), str):
            changes["email"] = _normalised_email(changes["email"])
        now = self.clock()
        cleared = [name for name, value in changes.items() if value is None]
        for name, value in changes.items():
            if value is not None:
                await self.repository.put(
                    ProfileValue(
                        subject_id=subject_id,
                        field=name,
                        value=msgspec.to_builtins(value),
                        source=patch.source,
                        updated_at=now,
                    )
                )
        await self.repository.remove(subject_id, cleared)
        return _profile(subject_id, await self.repository.values_for(subject_id))


def _profile(subject_id: str, values: Sequence[ProfileValue]) -> Profile:
    return Profile(
        subject_id=subject_id,
        fields={value.field: value.value for value in values},
        provenance={
            value.field: Provenance(source=value.source, updated_at=as_utc(value.updated_at)) for value in values
        },
    )


def _normalised_email(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise Unprocessable(f"fields.email: {exc}", slug="invalid-email") from exc
