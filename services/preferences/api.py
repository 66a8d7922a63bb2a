"""HTTP endpoints of the preferences service (internal: only the gateway calls them)."""

from __future__ import annotations

from litestar import Controller, get, patch
from litestar.di import Provide
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.repository import ProfileRepository
from services.preferences.schemas import Profile, ProfilePatch
from services.preferences.service import ProfileService
from tillit.problems import problem_responses
from tillit.service_tokens import require_service_token
from tillit.types import SubjectIdPath

__all__ = ["ProfileController"]


def provide_profile_service(session: AsyncSession) -> ProfileService:
    return ProfileService(ProfileRepository(session))


class ProfileController(Controller):
    path = "/v1/subjects/{subject_id:str}/profile"
    tags = ["profile"]
    guards = [require_service_token]
    dependencies = {"profiles": Provide(provide_profile_service, sync_to_thread=False)}

    @get(summary="The subject's whole profile with provenance", responses=problem_responses(400, 401, 404))
    async def read(self, subject_id: SubjectIdPath, profiles: ProfileService) -> Profile:
        return await profiles.get(subject_id)

    @patch(summary="Set or clear some profile fields", responses=problem_responses(400, 401, 413, 415, 422))
    async def update(self, subject_id: SubjectIdPath, data: ProfilePatch, profiles: ProfileService) -> Profile:
        return await profiles.patch(subject_id, data)
