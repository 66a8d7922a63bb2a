"""Recording consent and deriving its current state."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from datetime import datetime

import msgspec

from services.consent.models import ConsentEvent, ConsentState
from services.consent.repository import ConsentRepository
from services.consent.schemas import (
    ConsentEventOut,
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

__all__ = ["ConsentService", "truncate_ip"]

_ACTIONS = {"give": "given", "withdraw": "withdrawn"}


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
        evidence = msgspec.structs.replace(command.evidence, ip=truncate_ip(command.evidence.ip))
        action = _ACTIONS[command.action]
        event = ConsentEvent(
            id=str(uuid.uuid4()),
            subject_id=subject_id,
            purpose=command.purpose,
            action=action,
            notice_version=command.notice_version,
            source=command.source,
            collected_at=now,
            evidence=msgspec.to_builtins(evidence),
        )
        await self.repository.append_event(event)
        state = ConsentState(
            subject_id=subject_id,
            purpose=command.purpose,
            status=action,
            since=now,
            event_id=event.id,
            notice_version=command.notice_version,
            expires_at=self.policy.expires_at(command.purpose, now) if action == "given" else None,
        )
        await self.repository.put_state(state)
        return RecordedConsent(event=self._event_out(event), state=self._status_out(state, now))

    async def current(self, subject_id: str) -> SubjectConsents:
        now = self.clock()
        states = await self.repository.states_for(subject_id)
        return SubjectConsents(
            subject_id=subject_id, as_of=now, consents=[self._status_out(state, now) for state in states]
        )

    @staticmethod
    def _event_out(event: ConsentEvent) -> ConsentEventOut:
        return ConsentEventOut(
            id=event.id,
            subject_id=event.subject_id,
            purpose=event.purpose,
            action=event.action,  # type: ignore[arg-type]
            notice_version=event.notice_version,
            source=event.source,
            collected_at=as_utc(event.collected_at),
            evidence=msgspec.convert(event.evidence, Evidence),
        )

    @staticmethod
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
