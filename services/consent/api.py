"""HTTP endpoints of the consent service (internal: only the gateway calls them)."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Any, Final

from litestar import Controller, Litestar, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import HeaderParameter, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from sqlmodel.ext.asyncio.session import AsyncSession

from services.consent.chain import LedgerReport
from services.consent.repository import ConsentRepository
from services.consent.schemas import (
    ActiveConsents,
    ConfirmConsent,
    ConsentHistory,
    ConsentStats,
    GpcOutcome,
    GpcSignal,
    ImportBatch,
    ImportResult,
    PurposeOut,
    PurposeStates,
    ReceiptOut,
    ReconsentNeeded,
    RecordConsent,
    RecordedConsent,
    SubjectBatch,
    SubjectConsents,
)
from services.consent.service import BatchedStateReads, ConsentService, SigningKeys, read_purpose_states
from tillit.db import Database, database_read_session, provide_read_session, read_session, request_session
from tillit.fast_path import BatchRead
from tillit.patterns import exact, inner
from tillit.problems import problem_responses
from tillit.types import PURPOSE_PATTERN, SUBJECT_ID_PATTERN, SubjectIdPath

__all__ = ["PURPOSE_STATES", "STATE_READS", "ConsentController", "receipt_keys"]

STATE_READS = "state_reads"
"""Key of the process's :class:`BatchedStateReads` in the application state (PostgreSQL only)."""

PurposePath = Annotated[str, Parameter(pattern=PURPOSE_PATTERN, max_length=100, description="A purpose key")]
AfterQuery = Annotated[
    str,
    Parameter(
        pattern=f"{exact('^$')}|{SUBJECT_ID_PATTERN}",
        max_length=64,
        description="Only subjects after this one in subject order (the last subject of the previous page)",
    ),
]
PageLimit = Annotated[int, Parameter(ge=1, le=10_000, description="At most this many subjects (1-10000)")]
EventIdPath = Annotated[str, Parameter(pattern=exact(r"^[0-9a-f-]{36}$"), description="A ledger event id (UUID)")]


def provide_consent_service(session: AsyncSession, request: Request[Any, Any, Any]) -> ConsentService:
    # Not a ``state`` parameter: Litestar copies the state for each one.
    return _consent_service(session, request.app.state)


def _consent_service(session: AsyncSession, state: State) -> ConsentService:
    return ConsentService(ConsentRepository(session), state.policy, state.signing_keys, heads=state.chain_heads)


GpcHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Sec-GPC",
        max_length=16,
        description="Global Privacy Control: 1 refuses sale and sharing; any other value means no signal",
    ),
]


READ_ONLY = {"session": Provide(provide_read_session)}
"""Handlers that only read take an autocommit session: no BEGIN and COMMIT round trips."""

IdempotencyKeyHeader = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=exact(r"^[!-~]+$"),
        description="Repeat a write safely: the same key with the same request answers as the first time",
    ),
]


async def fingerprint(request: Request[Any, Any, Any]) -> str:
    """What makes two requests the same request: method, path and body."""
    scope = request.scope  # not request.url: building it cost more than the hash (py-spy)
    digest = hashlib.sha256(f"{request.method} {scope.get('root_path', '')}{scope['path']}\n".encode())
    digest.update(await request.body())
    return digest.hexdigest()


_BATCH_MAX_BODY = 1024 * 1024


async def _purpose_states(app: Litestar, purpose: str, data: SubjectBatch) -> PurposeStates:
    """Every profile release's consent read comes here in the gateway's batches: on PostgreSQL one
    statement on a bare connection (see read_purpose_states), else a session opened here, not
    injected (see read_session)."""
    state = app.state
    database: Database = state.database
    if not database.is_sqlite:
        return await read_purpose_states(database, state.policy, purpose, data.subject_ids)
    async with database_read_session(database) as session:
        return await _consent_service(session, state).purpose_states(purpose, data.subject_ids)


async def _fast_purpose_states(app: Litestar, path: re.Match[str], data: SubjectBatch) -> PurposeStates:
    return await _purpose_states(app, path.group(1), data)


PURPOSE_STATES: Final = BatchRead(
    path=re.compile(rf"/v1/purposes/((?=[^/]{{1,100}}/){inner(PURPOSE_PATTERN)})/states"),
    body=SubjectBatch,
    max_body_bytes=_BATCH_MAX_BODY,
    answer=_fast_purpose_states,
)
"""``POST /v1/purposes/{purpose}/states`` on :mod:`tillit.fast_path` (the purpose at most 100 characters)."""


@get("/.well-known/jwks.json", summary="Public keys that verify consent receipts", sync_to_thread=False)
def receipt_keys(state: State) -> dict[str, Any]:
    keys: SigningKeys = state.signing_keys
    return keys.public.as_dict(private=False)


class ConsentController(Controller):
    path = "/v1"
    tags = ["consent"]
    dependencies = {"consents": Provide(provide_consent_service, sync_to_thread=False)}

    @get(
        "/purposes",
        summary="Purposes declared in the policy",
        dependencies=READ_ONLY,
        responses=problem_responses(401),
    )
    async def list_purposes(self, consents: ConsentService) -> list[PurposeOut]:
        return consents.purposes()

    @post(
        "/subjects/{subject_id:str}/events",
        summary="Append a consent event to the ledger",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def record_event(
        self,
        request: Request[Any, Any, Any],
        subject_id: SubjectIdPath,
        data: RecordConsent,
        sec_gpc: GpcHeader = None,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> RecordedConsent:
        # The hottest write of the service: its session is opened here, not injected (see request_session).
        async with request_session(request) as session:
            consents = provide_consent_service(session, request)
            return await consents.once(
                idempotency_key,
                await fingerprint(request),
                # Without a key there is no idempotency record to write: the event is the only write.
                lambda: consents.record(subject_id, data, gpc=sec_gpc == "1", only_write=idempotency_key is None),
                RecordedConsent,
            )

    @post(
        "/imports",
        summary="Import consents collected elsewhere (CSV or NDJSON): every row or none, re-runs change nothing",
        status_code=HTTP_200_OK,
        request_max_body_size=5 * 1024 * 1024,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def import_batch(
        self,
        request: Request[Any, Any, Any],
        data: ImportBatch,
        consents: ConsentService,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> ImportResult:
        return await consents.once(
            idempotency_key, await fingerprint(request), lambda: consents.import_batch(data), ImportResult
        )

    @post(
        "/confirmations",
        summary="Double opt-in: confirm a pending consent with the token from the e-mailed link",
        status_code=HTTP_201_CREATED,
        responses=problem_responses(400, 401, 409, 413, 415, 422),
    )
    async def confirm(
        self,
        request: Request[Any, Any, Any],
        data: ConfirmConsent,
        consents: ConsentService,
        idempotency_key: IdempotencyKeyHeader = None,
    ) -> RecordedConsent:
        return await consents.once(
            idempotency_key, await fingerprint(request), lambda: consents.confirm(data), RecordedConsent
        )

    @post(
        "/subjects/{subject_id:str}/gpc",
        summary="Global Privacy Control signal: refuse every sale-or-sharing purpose not explicitly opted into since",
        status_code=HTTP_200_OK,
        responses=problem_responses(400, 401, 413, 415),
    )
    async def gpc(self, subject_id: SubjectIdPath, data: GpcSignal, consents: ConsentService) -> GpcOutcome:
        return await consents.apply_gpc(subject_id, data.evidence)

    @get(
        "/subjects/{subject_id:str}/reconsent",
        summary="Purposes a material notice change asks the subject to consent to again",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401),
    )
    async def reconsent(self, subject_id: SubjectIdPath, consents: ConsentService) -> ReconsentNeeded:
        return await consents.reconsent(subject_id)

    @get(
        "/subjects/{subject_id:str}/receipts/{event_id:str}",
        summary="The signed Kantara consent receipt of one given or withdrawn event",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401, 404),
    )
    async def receipt(self, subject_id: SubjectIdPath, event_id: EventIdPath, consents: ConsentService) -> ReceiptOut:
        return await consents.receipt(subject_id, event_id)

    @get(
        "/subjects/{subject_id:str}/consents",
        summary="Current consent state of one subject",
        responses=problem_responses(400, 401),
    )
    async def current_state(self, subject_id: SubjectIdPath, request: Request[Any, Any, Any]) -> SubjectConsents:
        # The hottest read of the service: batched on PostgreSQL, else its session opened here, not
        # injected (see read_session).
        state = request.app.state
        batched: BatchedStateReads | None = state.get(STATE_READS)
        if batched is not None:
            return await batched.current(subject_id, state.policy)
        async with read_session(request) as session:
            return await provide_consent_service(session, request).current(subject_id)

    @get(
        "/subjects/{subject_id:str}/history",
        summary="Every consent event of one subject, oldest first",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401),
    )
    async def history(self, subject_id: SubjectIdPath, consents: ConsentService) -> ConsentHistory:
        return await consents.history(subject_id)

    @get(
        "/purposes/{purpose:str}/active",
        summary="Subjects whose consent to the purpose counts now, in subject order (keyset pages for audiences)",
        dependencies=READ_ONLY,
        responses=problem_responses(400, 401, 422),
    )
    async def active(
        self, purpose: PurposePath, consents: ConsentService, after: AfterQuery = "", limit: PageLimit = 1000
    ) -> ActiveConsents:
        return await consents.active(purpose, after, limit)

    @post(
        "/purposes/{purpose:str}/states",
        status_code=HTTP_200_OK,
        summary="The purpose's current state for up to 5000 subjects at once",
        request_max_body_size=_BATCH_MAX_BODY,
        responses=problem_responses(400, 401, 413, 415, 422),
    )
    async def purpose_states(
        self, purpose: PurposePath, data: SubjectBatch, request: Request[Any, Any, Any]
    ) -> PurposeStates:
        # Its common form is answered before Litestar sees it (PURPOSE_STATES, tillit.fast_path).
        return await _purpose_states(request.app, purpose, data)

    @get(
        "/ledger/verify",
        summary="Walk every hash chain of the ledger; names the first altered, missing or inserted event",
        responses=problem_responses(401),
    )
    async def verify_ledger(self, consents: ConsentService) -> LedgerReport:
        return await consents.verify()

    @get(
        "/stats/consents",
        summary="How many subjects' consent counts now, per consent-based purpose (read only)",
        dependencies=READ_ONLY,
        responses=problem_responses(401),
    )
    async def consent_stats(self, consents: ConsentService) -> ConsentStats:
        return await consents.stats()
