"""HTTP endpoints of the consent service (internal: only the gateway calls them)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.status_codes import HTTP_201_CREATED
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.chain import LedgerReport
from services.consent.repository import ConsentRepository
from services.consent.schemas import ConsentHistory, PurposeOut, RecordConsent, RecordedConsent, SubjectConsents
from services.consent.service import ConsentService
from tillit.problems import problem_responses
from tillit.service_tokens import require_service_token
from tillit.types import SubjectIdPath

__all__ = ["ConsentController"]


def provide_consent_service(session: AsyncSession, state: State) -> ConsentService:
    return ConsentService(ConsentRepository(session), state.policy)


class ConsentController(Controller):
    path = "/v1"
    tags = ["consent"]
    guards = [require_service_token]
    dependencies = {"consents": Provide(provide_consent_service, sync_to_thread=False)}

    @get("/purposes", summary="Purposes declared in the policy", responses=problem_responses(401))
    async def list_purposes(self, consents: ConsentService) -> list[PurposeOut]:
        return consents.purposes()

    @post(
        "/subjects/{subject_id:str}/events",
        summary="Append a consent event to the ledger",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def record_event(
        self, subject_id: SubjectIdPath, data: RecordConsent, consents: ConsentService
    ) -> RecordedConsent:
        return await consents.record(subject_id, data)

    @get(
        "/subjects/{subject_id:str}/consents",
        summary="Current consent state of one subject",
        responses=problem_responses(400, 401),
    )
    async def current_state(self, subject_id: SubjectIdPath, consents: ConsentService) -> SubjectConsents:
        return await consents.current(subject_id)

    @get(
        "/subjects/{subject_id:str}/history",
        summary="Every consent event of one subject, oldest first",
        responses=problem_responses(400, 401),
    )
    async def history(self, subject_id: SubjectIdPath, consents: ConsentService) -> ConsentHistory:
        return await consents.history(subject_id)

    @get(
        "/ledger/verify",
        summary="Walk every hash chain of the ledger; names the first altered, missing or inserted event",
        responses=problem_responses(401),
    )
    async def verify_ledger(self, consents: ConsentService) -> LedgerReport:
        return await consents.verify()
