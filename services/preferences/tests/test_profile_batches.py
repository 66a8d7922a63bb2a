"""Profiles in bulk for audiences: by a list of subjects, and every profile keyset page by page."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from services.preferences.repository import StoredValue
from services.preferences.service import BatchedProfileReads, read_profile_batch
from services.preferences.tests.support import patch, profile_service
from tillit.db import Database
from tillit.problems import NotFound, Unavailable

pytestmark = pytest.mark.anyio


async def test_a_batch_holds_the_profiles_asked_for_in_subject_order(database: Database) -> None:
    await patch(database, "s2", {"email": "two@example.com", "shoe_size": 40, "sizes": {"tops": "M"}})
    await patch(database, "s1", {"first_name": "Ett", "favourite_brands": ["Acne Studios"]})
    await patch(database, "s3", {"first_name": "Tre"})
    await patch(database, "s4", {"first_name": "Fyra"})
    await patch(database, "s4", {"first_name": None})  # every value cleared: no profile left

    async with profile_service(database) as service:
        batch = await service.batch(["s4", "s2", "nobody", "s1"])
    assert [(p.subject_id, p.fields) for p in batch.profiles] == [
        ("s1", {"favourite_brands": ["Acne Studios"], "first_name": "Ett"}),
        ("s2", {"email": "two@example.com", "shoe_size": 40, "sizes": {"tops": "M"}}),
    ]


async def test_pages_of_every_profile_cover_each_once(database: Database) -> None:
    for number in range(7):
        await patch(database, f"s{number}", {"shoe_size": 36 + number})
    await patch(database, "s3", {"shoe_size": None})

    seen: list[str] = []
    after = ""
    async with profile_service(database) as service:
        while True:
            page = await service.page(after, 3)
            seen += [profile.subject_id for profile in page.profiles]
            if page.last is None:
                break
            after = page.last
        empty = await service.page("s9", 3)
    assert seen == ["s0", "s1", "s2", "s4", "s5", "s6"]
    assert (empty.profiles, empty.last) == ([], None)


async def test_a_batch_answers_each_profile_as_the_single_read_does(database: Database) -> None:
    """The gateway's releases read profiles in batches: the fields must be those of the single read."""
    fields = {
        "email": "astrid@example.com",
        "first_name": 'Åsa "Astrid" Ödmark',
        "shoe_size": 38.5,
        "sizes": {"tops": "M"},
        "favourite_brands": ["Acne Studios", "Filippa K"],
        "price_range": {"min": 10, "max": 250, "currency": "SEK"},
    }
    await patch(database, "astrid", fields)
    await patch(database, "bo", {"shoe_size": 44})
    async with profile_service(database) as service:
        batch = {p.subject_id: p.fields for p in (await service.batch(["astrid", "bo", "nobody"])).profiles}
        alone = {subject: (await service.get(subject)).fields for subject in ("astrid", "bo")}
    assert batch == alone


async def test_the_bare_batch_read_answers_as_the_service_does(database: Database) -> None:
    """On PostgreSQL the gateway's profile batches are read without a session (``read_profile_batch``):
    the same profiles in the same order, encoded to the same bytes."""
    if database.is_sqlite:
        pytest.skip("the bare batch read is PostgreSQL's (SQLite reads through the session)")
    await patch(database, "s2", {"email": "two@example.com", "shoe_size": 40.5, "sizes": {"tops": "M"}})
    await patch(database, "s1", {"first_name": 'Åsa "Ett" Ödmark', "favourite_brands": ["Acne Studios"]})
    await patch(database, "s4", {"first_name": "Fyra"})
    await patch(database, "s4", {"first_name": None})
    for subjects in (["s4", "s2", "nobody", "s1", "s2"], ["nobody"], []):
        async with profile_service(database) as service:
            expected = await service.batch(subjects)
        bare = await read_profile_batch(database, subjects)
        assert bare == expected
        assert msgspec.json.encode(bare) == msgspec.json.encode(expected)


async def test_batched_single_reads_answer_as_the_single_read_and_see_every_acknowledged_patch(
    database: Database,
) -> None:
    """The service's batched GET /v1/subjects/{id}/profile (PostgreSQL): concurrent reads share
    statements yet answer as ``get`` does (a subject without values is a 404 each); a patch
    acknowledged before a read began is in it; a failed batch answers 503 to every read in it."""
    if database.is_sqlite:
        pytest.skip("batched reads are PostgreSQL's (SQLite reads each subject alone)")
    await patch(database, "astrid", {"email": "astrid@example.com", "sizes": {"tops": "M"}, "shoe_size": 38.5})
    await patch(database, "bo", {"favourite_brands": ["Acne Studios"], "first_name": 'Bo "B" Ödmark'})
    await patch(database, "cleared", {"first_name": "Gone"})
    await patch(database, "cleared", {"first_name": None})
    subjects = ["astrid", "bo", "cleared", "nobody"] * 30
    reads = BatchedProfileReads(database)
    fetched: list[int] = []
    fetch = reads._fetch

    async def counting(keys: list[str]) -> dict[str, list[StoredValue]]:
        fetched.append(len(keys))
        return await fetch(keys)

    reads._batcher._fetch = counting  # type: ignore[method-assign]
    try:
        batched = await asyncio.gather(*(reads.get(subject) for subject in subjects), return_exceptions=True)
        assert len(fetched) < len(subjects) / 10, fetched
        async with profile_service(database) as service:
            alone = {"astrid": await service.get("astrid"), "bo": await service.get("bo")}
        for subject, answer in zip(subjects, batched, strict=True):
            if subject in alone:
                assert answer == alone[subject]
            else:
                assert isinstance(answer, NotFound), answer
                assert answer.slug == "profile-not-found"

        for size in range(36, 46):
            reading = [asyncio.ensure_future(reads.get("astrid")) for _ in range(5)]
            await patch(database, "astrid", {"shoe_size": size})
            after = await asyncio.gather(*(reads.get("astrid") for _ in range(5)))
            assert {profile.fields["shoe_size"] for profile in after} == {size}
            await asyncio.gather(*reading)

        async def broken(keys: list[str]) -> dict[str, list[StoredValue]]:
            raise ConnectionResetError("the database went away")

        reads._batcher._fetch = broken  # type: ignore[method-assign]
        failed = await asyncio.gather(*(reads.get(s) for s in subjects[:4]), return_exceptions=True)
        assert all(isinstance(error, Unavailable) and error.status_code == 503 for error in failed), failed
    finally:
        await reads.close()
