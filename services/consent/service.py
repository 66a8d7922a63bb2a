"""Recording consent and deriving its current state."""

from __future__ import annotations

import ipaddress
import secrets
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from services.consent.chain import LedgerReport, LedgerVerifier, event_hash, personal_digest
from services.consent.models import ConsentState
from services.consent.repository import ConsentRepository
from services.consent.schemas import (
    ConsentEventOut,
    ConsentHistory,
    ConsentStatusOut,
    Evidence,
    PurposeOut,
    RecordConsent,
    RecordedConsent,
    SubjectConsents,
)
from tillit.policy import Policy
from tillit.problems import BadRequest, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["CLOCK_SKEW", "ConsentService", "truncate_ip"]

_ACTIONS = {"give": "given", "refuse": "refused", "withdraw": "withdrawn"}
_STATUS_AFTER = {
    "given": "given",
    "confirmed": "given",
    "refused": "refused",
    "withdrawn": "withdrawn",
    "expired": "expired",
    "pending": "pending",
}
CLOCK_SKEW: Final = timedelta(minutes=5)
"""How far ahead of the server's clock a caller's ``collected_at`` may be."""


def truncate_ip(address: str | None) -> str | None:
    """Keep only the network part (IPv4 /24, IPv6 /48): evidence without identifying the device."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise BadRequest(f"evidence.ip {address!r} is not an IPv4 or IPv6 address", slug="invalid-evidence") from exc
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


class ConsentService:
    def __init__(self, repository: ConsentRepository, policy: Policy, clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.policy = policy
        self.clock = clock

    def purposes(self) -> list[PurposeOut]:
        return [
            PurposeOut(key=key, title=p.title, legal_basis=p.legal_basis, consent_lasts=p.consent_lasts)
            for key, p in self.policy.purposes.items()
        ]

    async def record(self, subject_id: str, command: RecordConsent) -> RecordedConsent:
        if command.purpose not in self.policy.purposes:
            raise Unprocessable(f"purpose {command.purpose!r} is not declared in the policy", slug="unknown-purpose")
        now = self.clock()
        collected_at = command.collected_at or now
        if collected_at > now + CLOCK_SKEW:
            raise Unprocessable(
                f"collected_at {collected_at.isoformat()} lies in the future (more than "
                f"{int(CLOCK_SKEW.total_seconds())} s ahead of the server's clock)",
                slug="collected-in-future",
            )
        evidence = msgspec.structs.replace(command.evidence, ip=truncate_ip(command.evidence.ip))
        event = await self._append(
            subject_id,
            purpose=command.purpose,
            action=_ACTIONS[command.action],
            notice_version=command.notice_version,
            source=command.source,
            collected_at=collected_at,
            evidence=msgspec.to_builtins(evidence),
            now=now,
        )
        state = await self._project(event)
        return RecordedConsent(event=_event_out(event), state=_status_out(state, now))

    async def _append(
        self,
        subject_id: str,
        *,
        purpose: str,
        action: str,
        notice_version: int | None,
        source: str,
        collected_at: datetime,
        evidence: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        """Chain one event onto the subject's ledger (the chain head stays locked until commit)."""
        chain = await self.repository.lock_chain(subject_id, now)
        event_id = str(uuid.uuid4())
        salt = secrets.token_hex(16)
        personal = personal_digest(salt, subject_id, evidence)
        seq = chain.length + 1
        event = {
            "id": event_id,
            "chain_id": chain.chain_id,
            "seq": seq,
            "subject_id": subject_id,
            "purpose": purpose,
            "action": action,
            "notice_version": notice_version,
            "source": source,
            "collected_at": collected_at,
            "recorded_at": now,
            "evidence": evidence,
            "personal_salt": salt,
            "personal_digest": personal,
            "prev_hash": chain.head_hash,
            "hash": event_hash(
                chain_id=chain.chain_id,
                seq=seq,
                prev_hash=chain.head_hash,
                event_id=event_id,
                purpose=purpose,
                action=action,
                notice_version=notice_version,
                source=source,
                collected_at=collected_at,
                recorded_at=now,
                personal=personal,
            ),
        }
        await self.repository.append_event(event)
        return event

    async def _project(self, event: dict[str, Any]) -> ConsentState:
        """Derive the purpose's current state from the event just appended, in the same transaction."""
        status = _STATUS_AFTER[event["action"]]
        state = ConsentState(
            subject_id=event["subject_id"],
            purpose=event["purpose"],
            status=status,
            since=event["collected_at"],
            event_id=event["id"],
            notice_version=event["notice_version"],
            expires_at=self.policy.expires_at(event["purpose"], event["collected_at"]) if status == "given" else None,
        )
        await self.repository.put_state(state.model_dump())
        return state

    async def current(self, subject_id: str) -> SubjectConsents:
        now = self.clock()
        states = await self.repository.states_for(subject_id)
        return SubjectConsents(subject_id=subject_id, as_of=now, consents=[_status_out(state, now) for state in states])

    async def history(self, subject_id: str) -> ConsentHistory:
        events = await self.repository.events_for(subject_id)
        return ConsentHistory(subject_id=subject_id, events=[_event_out(event.model_dump()) for event in events])

    async def verify(self) -> LedgerReport:
        verifier = LedgerVerifier(await self.repository.chain_heads())
        async for event in self.repository.stream_ledger():
            if not verifier.feed(event):
                break
        return verifier.finish()


def _event_out(event: dict[str, Any]) -> ConsentEventOut:
    return ConsentEventOut(
        id=event["id"],
        subject_id=event["subject_id"],
        purpose=event["purpose"],
        action=event["action"],
        notice_version=event["notice_version"],
        source=event["source"],
        collected_at=as_utc(event["collected_at"]),
        recorded_at=as_utc(event["recorded_at"]),
        evidence=msgspec.convert(event["evidence"] or {}, Evidence),
        seq=event["seq"],
        hash=event["hash"],
    )


def _status_out(state: ConsentState, now: datetime) -> ConsentStatusOut:
    expires_at = as_utc(state.expires_at) if state.expires_at else None
    expired = state.status == "given" and expires_at is not None and expires_at <= now
    return ConsentStatusOut(
        purpose=state.purpose,
        status="expired" if expired else state.status,  # type: ignore[arg-type]
        active=state.status == "given" and not expired,
        since=as_utc(state.since),
        event_id=state.event_id,
        notice_version=state.notice_version,
        expires_at=expires_at,
    )
