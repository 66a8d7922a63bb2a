"""What the gateway's fast-path tests share (test_fast_release, test_fast_decision): the upstream
stub, an access token, the audit rows of a subject, and the comparison of the two paths' answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

from gateway.clients_cli import client_service
from gateway.release import ConsentView
from gateway.schemas import RulesDecision, RulesReason
from gateway.upstream import StoredProfile
from tillit.settings import Settings

__all__ = ["ANSWER", "ASTRID", "FIELDS", "PURPOSE", "StubUpstream", "access_token", "audit_rows", "same_answer"]

PURPOSE = "personalize.content.profiled"
ASTRID = "shopper-astrid"
FIELDS = {"first_name": "Astrid", "email": "astrid@example.com", "sizes": {"tops": "M"}}
ANSWER = RulesDecision(
    purpose=PURPOSE,
    segments=["returning"],
    variants={"home.hero": "bold"},
    products=["p1"],
    reasons=[RulesReason(rule="boost-hope", explanation="product.brand is Hope")],
)


@dataclass
class StubUpstream:
    """The release's reads and the rules service's decision, from memory; ``failures`` makes them raise."""

    failures: dict[str, Exception] = field(default_factory=dict)
    rules_failure: Exception | None = None
    reads: list[tuple[str, str]] = field(default_factory=list)
    decided: list[Any] = field(default_factory=list)

    async def release_reads(self, subject_id: str, purpose: str) -> tuple[ConsentView | None, StoredProfile]:
        self.reads.append((subject_id, purpose))
        if subject_id in self.failures:
            raise self.failures[subject_id]
        consent = ConsentView(status="given", active=True, event_id="e-1")
        return consent, StoredProfile(subject_id=subject_id, fields=dict(FIELDS))

    async def decide(self, request: dict[str, Any]) -> RulesDecision:
        self.decided.append(msgspec.json.decode(msgspec.json.encode(request)))
        if self.rules_failure is not None:
            raise self.rules_failure
        return ANSWER


async def access_token(client: AsyncTestClient[Litestar], settings: Settings, scopes: list[str]) -> str:
    """A channel client's access token with these scopes, from the app's own token endpoint."""
    async with client_service(settings) as clients:
        credentials = await clients.create("web", scopes)
    answer = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(credentials.client_id, credentials.client_secret),
    )
    return str(answer.json()["access_token"])


async def audit_rows(client: AsyncTestClient[Litestar], subject_id: str) -> list[tuple[str, str]]:
    """(purpose, outcome) of the subject's release audit rows, oldest first."""
    async with client.app.state.database.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT purpose, outcome FROM release_record WHERE subject_id = :s ORDER BY released_at"),
            {"s": subject_id},
        )
        return [(row.purpose, row.outcome) for row in rows]


def same_answer(fast: httpx.Response, routed: httpx.Response) -> None:
    """The same status, headers and body; a release id differs (each answer is its own release)."""
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert fast.headers == routed.headers
    fast_body, routed_body = fast.json(), routed.json()
    if fast.status_code == 200:
        assert fast_body.pop("release_id") != routed_body.pop("release_id")
    assert fast_body == routed_body
