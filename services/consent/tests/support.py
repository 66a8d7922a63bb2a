"""Helpers of the consent service's tests: one request's worth of work per call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Final

from joserfc.jwk import KeySet, OKPKey

from services.consent.chain import LedgerReport
from services.consent.heads import ChainHeadCache
from services.consent.repository import ConsentRepository
from services.consent.schemas import RecordConsent, RecordedConsent
from services.consent.service import ConsentService, SigningKeys
from tillit.db import Database, release_autocommit
from tillit.policy import Policy, load_policy
from tillit.settings import REPO_ROOT

__all__ = ["KEYS", "POLICY", "PROFILED", "SMS", "consent_service", "record", "record_alone", "verify"]

PROFILED: Final = "personalize.content.profiled"
SMS: Final = "marketing.communications.sms"
POLICY: Final[Policy] = load_policy(REPO_ROOT / "policies")
_KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "test-receipts", "alg": "Ed25519"})
KEYS: Final = SigningKeys(private=_KEY, public=KeySet([_KEY]))


@asynccontextmanager
async def consent_service(
    database: Database, policy: Policy = POLICY, clock: Any = None
) -> AsyncIterator[ConsentService]:
    """A service on a session whose transaction commits when the block ends (as a request's does)."""
    async with database.sessionmaker() as session, session.begin():
        service = ConsentService(ConsentRepository(session), policy, KEYS)
        if clock is not None:
            service.clock = clock
        yield service


async def record(
    database: Database,
    subject: str,
    purpose: str = PROFILED,
    action: str = "give",
    *,
    source: str = "preference_page",
    gpc: bool = False,
    policy: Policy = POLICY,
    now: datetime | None = None,
    **extra: Any,
) -> RecordedConsent:
    async with consent_service(database, policy, (lambda: now) if now else None) as service:
        command = RecordConsent(purpose=purpose, action=action, source=source, **extra)  # type: ignore[arg-type]
        return await service.record(subject, command, gpc=gpc)


async def verify(database: Database) -> LedgerReport:
    async with consent_service(database) as service:
        return await service.verify()


async def record_alone(
    database: Database,
    subject: str,
    purpose: str = PROFILED,
    action: str = "give",
    *,
    heads: ChainHeadCache | None = None,
    **extra: Any,
) -> RecordedConsent:
    """As ``POST .../events`` without an Idempotency-Key: the event is the request's only write.

    The session is opened as :func:`tillit.db.provide_session` opens it (no transaction begun), so on
    PostgreSQL the event commits as one statement of its own. ``heads``: the process's chain head cache.
    """
    async with database.sessionmaker() as session:
        try:
            service = ConsentService(ConsentRepository(session), POLICY, KEYS, heads=heads)
            command = RecordConsent(purpose=purpose, action=action, source="preference_page", **extra)  # type: ignore[arg-type]
            recorded = await service.record(subject, command, only_write=True)
            if session.in_transaction():
                await session.commit()
            return recorded
        finally:
            await release_autocommit(session)
