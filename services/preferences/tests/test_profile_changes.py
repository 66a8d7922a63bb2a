"""PATCH semantics, provenance, the change history, export, erasure and concurrent writers."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.preferences.models import SUBJECT_TABLES
from services.preferences.repository import ProfileRepository
from services.preferences.tests.support import patch, profile_service, subject_rows, subject_tables
from tillit.db import Database
from tillit.problems import NotFound

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> Any:
    return lambda: T0 + timedelta(minutes=minutes)


async def read(database: Database, subject: str) -> Any:
    async with profile_service(database) as service:
        return await service.get(subject)


async def history(database: Database, subject: str, limit: int = 50, before: int | None = None) -> Any:
    async with profile_service(database) as service:
        return await service.history(subject, limit, before)


async def test_present_fields_are_set_null_clears_and_absent_ones_are_untouched(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "first_name": "Astrid", "topics": ["news"]})
    profile = await patch(database, "astrid", {"first_name": None, "topics": ["news", "sale"]})
    assert profile.fields == {"email": "astrid@example.com", "topics": ["news", "sale"]}
    assert (await read(database, "astrid")).fields == profile.fields


async def test_sizes_and_contact_frequency_merge_key_by_key(database: Database) -> None:
    await patch(database, "astrid", {"sizes": {"tops": "S", "shoes": 38}, "contact_frequency": {"email": "weekly"}})
    profile = await patch(database, "astrid", {"sizes": {"shoes": 38.5, "tops": None, "dresses": 36}})
    assert profile.fields["sizes"] == {"dresses": 36, "shoes": 38.5}
    profile = await patch(database, "astrid", {"contact_frequency": {"sms": "monthly"}})
    assert profile.fields["contact_frequency"] == {"email": "weekly", "sms": "monthly"}
    profile = await patch(database, "astrid", {"sizes": {"shoes": None, "dresses": None}})
    assert "sizes" not in profile.fields
    assert "sizes" not in profile.provenance
    profile = await patch(database, "astrid", {"sizes": None, "contact_frequency": None, "topics": None})
    assert profile.fields == {}


async def test_a_profile_cleared_of_every_field_is_not_found(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com"})
    await patch(database, "astrid", {"email": None})
    with pytest.raises(NotFound):
        await read(database, "astrid")
    with pytest.raises(NotFound):
        await read(database, "nobody")


async def test_every_value_carries_its_own_source_and_time(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "shoe_size": 38}, "import", clock=at(0))
    profile = await patch(database, "astrid", {"shoe_size": 39}, "quiz:style-finder", clock=at(5))
    assert (profile.provenance["email"].source, profile.provenance["email"].updated_at) == ("import", T0)
    assert profile.provenance["shoe_size"].source == "quiz:style-finder"
    assert profile.provenance["shoe_size"].updated_at == T0 + timedelta(minutes=5)
    stored = await read(database, "astrid")
    assert stored.provenance == profile.provenance


async def test_setting_a_value_it_already_has_changes_nothing(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "sizes": {"tops": "M"}}, "import", clock=at(0))
    again = await patch(database, "astrid", {"email": "astrid@EXAMPLE.com", "sizes": {"tops": "M"}}, clock=at(9))
    assert again.provenance["email"].source == "import"
    assert again.provenance["sizes"].updated_at == T0
    assert len((await history(database, "astrid")).changes) == 2


async def test_each_change_is_in_the_history_newest_first_with_old_and_new_values(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "shoe_size": 38}, "import", clock=at(0))
    await patch(database, "astrid", {"shoe_size": 39}, clock=at(1))
    await patch(database, "astrid", {"shoe_size": None}, clock=at(2))
    changes = (await history(database, "astrid")).changes
    assert [(c.field, c.old_value, c.new_value, c.source, c.changed_at) for c in changes] == [
        ("shoe_size", 39, None, "preference_page", T0 + timedelta(minutes=2)),
        ("shoe_size", 38, 39, "preference_page", T0 + timedelta(minutes=1)),
        ("shoe_size", None, 38, "import", T0),
        ("email", None, "astrid@example.com", "import", T0),
    ]
    assert changes == sorted(changes, key=lambda change: change.id, reverse=True)


async def test_the_history_is_bounded_and_pages_on_by_id(database: Database) -> None:
    for size in range(36, 42):
        await patch(database, "astrid", {"shoe_size": size})
    await patch(database, "lars", {"shoe_size": 44})
    first = await history(database, "astrid", limit=4)
    assert [c.new_value for c in first.changes] == [41, 40, 39, 38]
    assert first.more
    rest = await history(database, "astrid", limit=4, before=first.changes[-1].id)
    assert ([c.new_value for c in rest.changes], rest.more) == ([37, 36], False)
    assert (await history(database, "nobody")).changes == []


class FailingRepository(ProfileRepository):
    """Fails once the patch's values and history rows are written, before the transaction commits."""

    async def flush(self) -> None:
        await super().flush()
        written = await self.changes_for("astrid")
        assert {change.field for change in written} == {"email", "shoe_size"}
        raise RuntimeError("the database went away mid-patch")


async def test_a_failure_mid_patch_leaves_neither_values_nor_history(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com"}, "import", clock=at(0))
    with pytest.raises(RuntimeError, match="mid-patch"):
        await patch(database, "astrid", {"email": "new@example.com", "shoe_size": 40}, repository=FailingRepository)
    profile = await read(database, "astrid")
    assert profile.fields == {"email": "astrid@example.com"}
    assert [c.new_value for c in (await history(database, "astrid")).changes] == ["astrid@example.com"]


async def test_the_export_holds_the_profile_with_provenance_and_the_whole_history(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "sizes": {"tops": "S"}}, "import", clock=at(0))
    await patch(database, "astrid", {"sizes": {"shoes": 38}}, clock=at(1))
    await patch(database, "lars", {"email": "lars@example.com"})
    async with profile_service(database, clock=at(10)) as service:
        export = await service.export("astrid")
    assert (export.subject_id, export.service, export.exported_at) == (
        "astrid",
        "preferences",
        T0 + timedelta(minutes=10),
    )
    profile = export.sections.profile
    assert profile.fields == {"email": "astrid@example.com", "sizes": {"shoes": 38, "tops": "S"}}
    assert profile.provenance["sizes"].updated_at == T0 + timedelta(minutes=1)
    assert [(c.field, c.old_value, c.new_value) for c in export.sections.profile_history] == [
        ("sizes", {"tops": "S"}, {"shoes": 38, "tops": "S"}),
        ("sizes", None, {"tops": "S"}),
        ("email", None, "astrid@example.com"),
    ]
    assert "lars@example.com" not in str(export)


async def test_the_export_of_an_unknown_subject_is_empty(database: Database) -> None:
    async with profile_service(database) as service:
        export = await service.export("nobody")
    assert (export.sections.profile.fields, export.sections.profile_history) == ({}, [])


async def test_every_table_holding_subjects_is_erased(database: Database) -> None:
    assert await subject_tables(database) == sorted(table.__tablename__ for table in SUBJECT_TABLES)


async def test_erasure_leaves_no_row_of_the_subject_in_any_table_and_others_untouched(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "sizes": {"tops": "S"}})
    await patch(database, "astrid", {"email": "astrid.lind@example.com", "topics": ["news"]})
    await patch(database, "lars", {"email": "lars@example.com"})
    async with profile_service(database, clock=at(3)) as service:
        confirmation = await service.erase("astrid")
    assert confirmation.rows_erased == {
        "quiz_session": 0,
        "profile_change": 4,
        "profile_value": 3,
        "profile_subject": 1,
    }
    assert (confirmation.subject_id, confirmation.service, confirmation.erased_at) == (
        "astrid",
        "preferences",
        T0 + timedelta(minutes=3),
    )
    assert set((await subject_rows(database, "astrid")).values()) == {0}
    assert await subject_rows(database, "lars") == {
        "profile_change": 1,
        "profile_subject": 1,
        "profile_value": 1,
        "quiz_session": 0,
    }
    async with profile_service(database) as service:
        again = await service.erase("astrid")
    assert set(again.rows_erased.values()) == {0}
    with pytest.raises(NotFound):
        await read(database, "astrid")


async def test_concurrent_patches_of_one_subject_all_land_and_the_history_chains(database: Database) -> None:
    garments: dict[str, Any] = {
        "tops": "S",
        "bottoms": 30,
        "dresses": 38,
        "outerwear": "M",
        "knitwear": "L",
        "shoes": 39,
    }
    await asyncio.gather(*(patch(database, "astrid", {"sizes": {name: size}}) for name, size in garments.items()))
    assert (await read(database, "astrid")).fields["sizes"] == garments
    changes = list(reversed((await history(database, "astrid")).changes))
    assert len(changes) == len(garments)
    assert changes[0].old_value is None
    for earlier, later in itertools.pairwise(changes):
        assert later.old_value == earlier.new_value
    assert changes[-1].new_value == garments
