"""Reading, updating, exporting and erasing the preference profile."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import msgspec
from email_validator import EmailNotValidError, validate_email

from services.preferences.models import ProfileChange, ProfileValue
from services.preferences.quizzes.models import QuizSession
from services.preferences.quizzes.schemas import QuizSessionRecord
from services.preferences.repository import ProfileRepository, StoredValue, profiles_of_subjects, stored_values_of
from services.preferences.schemas import (
    CONTACT_FREQUENCY_CHANNELS,
    MERGED_FIELDS,
    PROFILE_FIELD_NAMES,
    ErasureConfirmation,
    PreferenceSections,
    PriceRange,
    Profile,
    ProfileBatch,
    ProfileChangeOut,
    ProfileHistory,
    ProfilePage,
    ProfilePatch,
    ProfileStats,
    Provenance,
    StoredProfile,
    SubjectExport,
    SubjectProfile,
    SubjectQuizSessions,
)
from tillit.db import Database, bare_connection
from tillit.policy import Policy
from tillit.problems import NotFound, Unprocessable
from tillit.read_batch import ReadBatcher, database_unavailable
from tillit.types import as_utc, utcnow

__all__ = ["SERVICE_NAME", "BatchedProfileReads", "ProfileService", "check_fields_declared", "read_profile_batch"]

SERVICE_NAME: Final = "preferences"
_TEXT_LISTS: Final = frozenset({"favourite_categories", "favourite_brands", "topics"})


def check_fields_declared(policy: Policy) -> None:
    """Refuse to start when the profile could hold a field or name a channel the policy does not govern."""
    undeclared = sorted(set(PROFILE_FIELD_NAMES) - set(policy.fields))
    if undeclared:
        raise RuntimeError(f"profile fields missing from the policy: {', '.join(undeclared)}")
    unknown_channels = sorted(set(CONTACT_FREQUENCY_CHANNELS) - set(policy.channels))
    if unknown_channels:
        raise RuntimeError(f"contact_frequency names channels missing from the policy: {', '.join(unknown_channels)}")


async def read_profile_batch(database: Database, subject_ids: list[str]) -> ProfileBatch:
    """:meth:`ProfileService.batch` on PostgreSQL as one statement on a bare connection.

    Every profile release's profile read comes here in the gateway's batches. No session, service or
    repository around the statement: with the read session (an ``AsyncSession``, its context
    manager and lender) a batch of 1-4 subjects cost ~130 µs of CPU, without it ~85 µs
    (``bench.batch_reads``). A dropped connection is a 503 (see :func:`tillit.db.bare_fetch`).
    """
    rows = await profiles_of_subjects(database, subject_ids)
    return ProfileBatch(profiles=[SubjectProfile(subject_id, fields) for subject_id, fields in rows])


class ProfileService:
    def __init__(self, repository: ProfileRepository, clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.clock = clock

    async def stats(self) -> ProfileStats:
        return ProfileStats(as_of=self.clock(), subjects=await self.repository.count_subjects())

    async def get(self, subject_id: str) -> Profile:
        return _profile(subject_id, await self.repository.read_values(subject_id))

    async def batch(self, subject_ids: list[str]) -> ProfileBatch:
        """Many profiles at once (audiences): fields only, no provenance."""
        rows = await self.repository.profiles_of(subject_ids)
        return ProfileBatch(profiles=[SubjectProfile(subject_id, fields) for subject_id, fields in rows])

    async def page(self, after: str, limit: int) -> ProfilePage:
        """Up to ``limit`` subjects after ``after``, with their profiles (a subject with no value left is skipped)."""
        subjects = await self.repository.subjects_after(after, limit)
        rows = await self.repository.profiles_of(subjects) if subjects else []
        return ProfilePage(
            profiles=[SubjectProfile(subject_id, fields) for subject_id, fields in rows],
            last=subjects[-1] if len(subjects) == limit else None,
        )

    async def patch(self, subject_id: str, patch: ProfilePatch) -> Profile:
        """Apply a patch and record each change in the history, all in the caller's transaction.

        A field set to the value it already has is left alone: no new provenance, no history entry,
        so a retried request changes nothing.
        """
        return await self.write(subject_id, _normalised(patch), patch.source)

    async def write_traits(self, subject_id: str, traits: Mapping[str, Any], source: str) -> Profile:
        """Store quiz-derived traits as profile values named after them (PATCH refuses those names)."""
        return await self.write(subject_id, dict(traits), source)

    async def write(self, subject_id: str, requested: dict[str, Any], source: str) -> Profile:
        """Set (``None``: clear) values already validated, with history rows, in the caller's transaction."""
        now = self.clock()
        await self.repository.lock_subject(subject_id, now)
        current = {value.field: value for value in await self.repository.values_for(subject_id)}
        for name, wanted in requested.items():
            row = current.get(name)
            old = row.value if row is not None else None
            new = _merged(old, wanted) if name in MERGED_FIELDS and wanted is not None else wanted
            if new == old:
                continue
            if new is None and row is not None:
                await self.repository.remove(row)
                del current[name]
            elif row is None:
                current[name] = ProfileValue(
                    subject_id=subject_id, field=name, value=new, source=source, updated_at=now
                )
                self.repository.add(current[name])
            else:
                row.value, row.source, row.updated_at = new, source, now
            self.repository.add(
                ProfileChange(
                    subject_id=subject_id, field=name, old_value=old, new_value=new, source=source, changed_at=now
                )
            )
        await self.repository.flush()
        stored = _stored(current[name] for name in sorted(current))
        return Profile(subject_id=subject_id, fields=stored.fields, provenance=stored.provenance)

    async def history(self, subject_id: str, limit: int, before: int | None = None) -> ProfileHistory:
        changes = await self.repository.changes_for(subject_id, limit + 1, before)
        return ProfileHistory(
            subject_id=subject_id, changes=[_change(change) for change in changes[:limit]], more=len(changes) > limit
        )

    async def export(self, subject_id: str) -> SubjectExport:
        """Everything held about the subject; an empty export when nothing is held."""
        values = await self.repository.values_for(subject_id)
        changes = await self.repository.changes_for(subject_id)
        return SubjectExport(
            subject_id=subject_id,
            service=SERVICE_NAME,
            exported_at=self.clock(),
            sections=PreferenceSections(
                profile=_stored(values),
                profile_history=[_change(c) for c in changes],
                quiz_sessions=[_session_record(row) for row in await self.repository.quiz_sessions_for(subject_id)],
            ),
        )

    async def quiz_sessions(self, subject_id: str) -> SubjectQuizSessions:
        """The subject's quiz sessions alone: what the shopper's quiz page lists, without the whole export."""
        rows = await self.repository.quiz_sessions_for(subject_id)
        return SubjectQuizSessions(sessions=[_session_record(row) for row in rows])

    async def erase(self, subject_id: str) -> ErasureConfirmation:
        """Delete every row of the subject in one transaction; erasing again confirms zero rows."""
        counts = await self.repository.erase(subject_id)
        return ErasureConfirmation(
            subject_id=subject_id, service=SERVICE_NAME, erased_at=self.clock(), rows_erased=counts
        )


def _normalised(patch: ProfilePatch) -> dict[str, Any]:
    """The patch's fields as JSON values, normalised; 422 naming the field when one is refused."""
    requested = {
        name: value for name, value in msgspec.structs.asdict(patch.fields).items() if value is not msgspec.UNSET
    }
    if not requested:
        raise Unprocessable("the patch changes no field", slug="empty-patch")
    for name, value in requested.items():
        if value is None:
            continue
        if name == "email":
            requested[name] = _normalised_email(value)
        elif name == "first_name":
            requested[name] = _text(value, "fields.first_name")
        elif name in _TEXT_LISTS:
            requested[name] = _text_list(value, f"fields.{name}")
        elif isinstance(value, PriceRange) and value.min > value.max:
            raise _refused(
                "fields.price_range", f"min ({value.min}) is greater than max ({value.max})", "invalid-price-range"
            )
        else:
            requested[name] = msgspec.to_builtins(value)
    return requested


def _merged(old: Any, patch: dict[str, Any]) -> dict[str, Any] | None:
    """A per-key merge: present keys set, ``None`` clears; nothing left clears the field."""
    merged = {**(old if isinstance(old, dict) else {}), **patch}
    kept = {key: merged[key] for key in sorted(merged) if merged[key] is not None}
    return kept or None


def _text(value: str, where: str) -> str:
    cleaned = " ".join(unicodedata.normalize("NFC", value).split())
    if not cleaned:
        raise _refused(where, "must not be blank", "blank-text")
    return cleaned


def _text_list(values: list[str], where: str) -> list[str]:
    """Cleaned items, duplicates (ignoring case) dropped, first spelling and order kept."""
    seen: set[str] = set()
    kept: list[str] = []
    for index, value in enumerate(values):
        cleaned = _text(value, f"{where}[{index}]")
        if cleaned.casefold() not in seen:
            seen.add(cleaned.casefold())
            kept.append(cleaned)
    return kept


def _normalised_email(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _refused("fields.email", str(exc), "invalid-email") from exc


def _refused(where: str, problem: str, slug: str) -> Unprocessable:
    return Unprocessable(f"{where}: {problem}", slug=slug, errors=[{"field": where, "message": problem}])


class BatchedProfileReads:
    """Single profile reads of concurrent requests in one statement per batch (PostgreSQL only).

    Answers exactly what :meth:`ProfileService.get` does; see :mod:`tillit.read_batch` for why a read
    never sees less than what was committed before it began, and how a failed batch fails closed
    (every read in it a 503, nothing answered).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._batcher: ReadBatcher[str, list[StoredValue]] = ReadBatcher(
            self._fetch, database_unavailable("the profile")
        )

    async def get(self, subject_id: str) -> Profile:
        return _profile(subject_id, await self._batcher.get(subject_id) or [])

    async def close(self) -> None:
        await self._batcher.close()

    async def _fetch(self, subject_ids: list[str]) -> dict[str, list[StoredValue]]:
        async with bare_connection(self._database) as driver:
            return await stored_values_of(driver, subject_ids)


def _profile(subject_id: str, values: Sequence[ProfileValue | StoredValue]) -> Profile:
    if not values:
        raise NotFound(f"no profile is held for subject {subject_id!r}", slug="profile-not-found")
    stored = _stored(values)
    return Profile(subject_id=subject_id, fields=stored.fields, provenance=stored.provenance)


def _stored(values: Iterable[ProfileValue | StoredValue]) -> StoredProfile:
    rows = list(values)
    return StoredProfile(
        fields={row.field: row.value for row in rows},
        provenance={row.field: Provenance(source=row.source, updated_at=as_utc(row.updated_at)) for row in rows},
    )


def _change(change: ProfileChange) -> ProfileChangeOut:
    return ProfileChangeOut(
        id=change.id or 0,
        field=change.field,
        old_value=change.old_value,
        new_value=change.new_value,
        source=change.source,
        changed_at=as_utc(change.changed_at),
    )


def _session_record(row: QuizSession) -> QuizSessionRecord:
    return QuizSessionRecord(
        id=row.id,
        quiz_id=row.quiz_id,
        version=row.quiz_version,
        locale=row.locale,
        status=row.status,
        current_question=row.current_question,
        answers=dict(row.answers),
        traits=row.traits,
        started_at=as_utc(row.started_at),
        updated_at=as_utc(row.updated_at),
        expires_at=as_utc(row.expires_at),
        completed_at=as_utc(row.completed_at) if row.completed_at is not None else None,
    )
