"""The consent service's Litestar application (``tillit serve consent``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Litestar

from services.consent.api import PURPOSE_STATES, STATE_READS, ConsentController, receipt_keys
from services.consent.changes.api import ChangeController
from services.consent.expiry import expiry_sweeper
from services.consent.heads import ChainHeadCache
from services.consent.repository import ConsentRepository
from services.consent.requests.api import RequestController
from services.consent.service import BatchedStateReads, ConsentService, SigningKeys
from tillit.app import create_internal_service, postgres_state
from tillit.db import Database
from tillit.fast_path import install_fast_batch_reads
from tillit.keys import RECEIPT_KEY, load_public_keys, load_receipt_key
from tillit.policy import Policy
from tillit.settings import Settings

__all__ = ["MIGRATIONS", "create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


def require_controller(policy: Policy) -> None:
    """Receipts name the data controller; without one the service cannot give any."""
    if policy.controller is None:
        raise RuntimeError(
            f"the policy ({', '.join(policy.sources)}) names no data controller (controller:); "
            "consent receipts cannot be issued without one"
        )


def signing_state(settings: Settings) -> dict[str, Any]:
    return {
        "signing_keys": SigningKeys(
            private=load_receipt_key(settings.keys_dir), public=load_public_keys(settings.keys_dir, RECEIPT_KEY)
        ),
        "chain_heads": ChainHeadCache(),
    }


async def register_notices(app: Litestar) -> None:
    await publish_notices(app, app.state.policy)


async def publish_notices(app: Litestar, policy: Policy) -> None:
    """At start and before a reloaded policy is installed: a published notice text never changes."""
    database: Database = app.state.database
    async with database.sessionmaker() as session, session.begin():
        await ConsentService(ConsentRepository(session), policy).register_notices()


def create_app() -> Litestar:
    start_reads, stop_reads = postgres_state(STATE_READS, BatchedStateReads)
    app = create_internal_service(
        "consent",
        title="tillit consent service",
        description=(
            "Consent ledger (hash-chained per subject, append-only), the current consent state derived from "
            "it, notices, double opt-in, Global Privacy Control, signed Kantara consent receipts and GDPR "
            "data-subject request records."
        ),
        route_handlers=[ConsentController, receipt_keys, RequestController, ChangeController],
        migrations=MIGRATIONS,
        check_policy=require_controller,
        state=signing_state,
        background=lambda settings: expiry_sweeper(settings.expiry_sweep_seconds),
        on_startup=[register_notices, start_reads],
        on_shutdown=[stop_reads],
        policy_checks=[publish_notices],
    )
    # The gateway's batched consent reads, in their common form, before Litestar's per-request
    # machinery (tillit.fast_path: about half of such a read's CPU); every other request as before.
    return install_fast_batch_reads(app, [PURPOSE_STATES])
