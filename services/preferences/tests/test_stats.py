"""How many subjects hold a profile (what ``tillit policy diff`` reports for non-consent purposes)."""

from __future__ import annotations

import pytest

from services.preferences.tests.support import patch, profile_service
from tillit.db import Database

pytestmark = pytest.mark.anyio


async def test_subjects_with_a_profile_value_are_counted_once(database: Database) -> None:
    await patch(database, "astrid", {"email": "astrid@example.com", "first_name": "Astrid"})
    await patch(database, "lars", {"email": "lars@example.com"})
    await patch(database, "cleared", {"email": "gone@example.com"})
    await patch(database, "cleared", {"email": None})
    async with profile_service(database) as service:
        assert (await service.stats()).subjects == 2
        await service.erase("lars")
        assert (await service.stats()).subjects == 1
