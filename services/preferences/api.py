"""HTTP endpoints of the preferences service (internal: only the gateway calls them)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

from litestar import Controller, Litestar, Request, delete, get, patch, post
from litestar.di import Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from sqlmodel.ext.asyncio.session import AsyncSession

from services.preferences.repository import ProfileRepository
from services.preferences.schemas import (
    ErasureConfirmation,
    Profile,
    ProfileBatch,
    ProfileBatchRequest,
    ProfileHistory,
    ProfilePage,
    ProfilePatch,
    ProfileStats,
    SubjectExport,
)
from services.preferences.service import BatchedProfileReads, ProfileService, read_profile_batch
from tillit.db import Database, database_read_session, provide_read_session, read_session
from tillit.fast_path import BatchRead
from tillit.patterns import exact
from tillit.problems import problem_responses
from tillit.types import SUBJECT_ID_PATTERN, SubjectIdPath

__all__ = [
    "PROFILE_BATCH",
    "PROFILE_READS",
    "ProfileBatchController",
    "ProfileController",
    "StatsController",
    "SubjectDataController",
]

PROFILE_READS = "profile_reads"
"""Key of the process's :class:`BatchedProfileReads` in the application state (PostgreSQL only)."""


READ_ONLY = {"session": Provide(provide_read_session)}
"""Handlers that only read take an autocommit session: no BEGIN and COMMIT round trips."""

HistoryLimit = Annotated[int, Parameter(ge=1, le=200, description="At most this many changes (1-200)")]
HistoryBefore = Annotated[
    int | None,
    Parameter(ge=1, le=2**63 - 1, description="Only changes older than this change id (the next page)"),
]

AfterQuery = Annotated[
    str,
    Parameter(
        pattern=f"{exact('^$')}|{SUBJECT_ID_PATTERN}",
        max_length=64,
        description="Only subjects after this one in subject order (``last`` of the previous page)",
    ),
]
PageLimit = Annotated[int, Parameter(ge=1, le=5000, description="At most this many subjects (1-5000)")]


def provide_profile_service(session: AsyncSession) -> ProfileService:
    return ProfileService(ProfileRepository(session))


class ProfileController(Controller):
    path = "/v1/subjects/{subject_id:str}/profile"
    tags = ["profile"]
    dependencies = {"profiles": Provide(provide_profile_service, sync_to_thread=False)}

    @get(summary="The subject's whole profile with provenance", responses=problem_responses(400, 401, 404))
    async def read(self, subject_id: SubjectIdPath, request: Request[Any, Any, Any]) -> Profile:
        # The hottest read of the service: batched on PostgreSQL, else its session opened here, not
        # injected (see read_session).
        batched: BatchedProfileReads | None = request.app.state.get(PROFILE_READS)
        if batched is not None:
            return await batched.get(subject_id)
        async with read_session(request) as session:
            return await ProfileService(ProfileRepository(session)).get(subject_id)

    @patch(summary="Set or clear some profile fields", responses=problem_responses(400, 401, 413, 415, 422))
    async def update(self, subject_id: SubjectIdPath, data: ProfilePatch, profiles: ProfileService) -> Profile:
        return await profiles.patch(subject_id, data)

    @get(
        "/history",
        summary="Changes of the subject's profile, newest first",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401),
    )
    async def history(
        self,
        subject_id: SubjectIdPath,
        profiles: ProfileService,
        limit: HistoryLimit = 50,
        before: HistoryBefore = None,
    ) -> ProfileHistory:
        return await profiles.history(subject_id, limit, before)


class SubjectDataController(Controller):
    """Data-subject requests: the consent service's GDPR orchestration calls these through the gateway."""

    path = "/v1/subjects/{subject_id:str}"
    tags = ["data subjects"]
    dependencies = {"profiles": Provide(provide_profile_service, sync_to_thread=False)}

    @get(
        "/export",
        summary="Everything this service holds about the subject (empty sections when nothing is held)",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401),
    )
    async def export(self, subject_id: SubjectIdPath, profiles: ProfileService) -> SubjectExport:
        return await profiles.export(subject_id)

    @delete(
        summary="Erase every row of the subject in one transaction; erasing again answers with zero counts",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401),
    )
    async def erase(self, subject_id: SubjectIdPath, profiles: ProfileService) -> ErasureConfirmation:
        return await profiles.erase(subject_id)


class StatsController(Controller):
    path = "/v1/stats"
    tags = ["stats"]
    dependencies = {"profiles": Provide(provide_profile_service, sync_to_thread=False)}

    @get(
        "/subjects",
        summary="How many subjects hold a profile (read only)",
        dependencies=READ_ONLY,
        responses=problem_responses(401),
    )
    async def subjects(self, profiles: ProfileService) -> ProfileStats:
        return await profiles.stats()


_BATCH_MAX_BODY = 1024 * 1024


async def _profile_batch(app: Litestar, data: ProfileBatchRequest) -> ProfileBatch:
    """Every profile release's profile read comes here in the gateway's batches: on PostgreSQL one
    statement on a bare connection (see read_profile_batch), else a session opened here, not
    injected (see read_session)."""
    database: Database = app.state.database
    if not database.is_sqlite:
        return await read_profile_batch(database, data.subject_ids)
    async with database_read_session(database) as session:
        return await ProfileService(ProfileRepository(session)).batch(data.subject_ids)


class ProfileBatchController(Controller):
    """Profiles in bulk, for the gateway's audiences: by subject list, or every profile page by page."""

    path = "/v1/profiles"
    tags = ["profile"]
    dependencies = {"profiles": Provide(provide_profile_service, sync_to_thread=False), **READ_ONLY}

    @get(summary="Every profile, a keyset page at a time in subject order", responses=problem_responses(400, 401))
    async def page(self, profiles: ProfileService, after: AfterQuery = "", limit: PageLimit = 1000) -> ProfilePage:
        return await profiles.page(after, limit)

    @post(
        "/batch",
        status_code=HTTP_200_OK,
        summary="The profiles of up to 5000 subjects (those without one are left out)",
        request_max_body_size=_BATCH_MAX_BODY,
        responses=problem_responses(400, 401, 413, 415),
    )
    async def batch(self, data: ProfileBatchRequest, request: Request[Any, Any, Any]) -> ProfileBatch:
        # Its common form is answered before Litestar sees it (PROFILE_BATCH, tillit.fast_path).
        return await _profile_batch(request.app, data)


async def _fast_profile_batch(app: Litestar, _path: re.Match[str], data: ProfileBatchRequest) -> ProfileBatch:
    return await _profile_batch(app, data)


PROFILE_BATCH: Final = BatchRead(
    path=re.compile(r"/v1/profiles/batch"),
    body=ProfileBatchRequest,
    max_body_bytes=_BATCH_MAX_BODY,
    answer=_fast_profile_batch,
)
"""``POST /v1/profiles/batch`` on :mod:`tillit.fast_path`."""
