"""Releasing profiles for one purpose and capturing channel consent."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from gateway.audit_writer import ReleaseRow
from gateway.models import ReleaseRecord
from gateway.oauth import Caller
from gateway.release import check_channel_purpose, decide
from gateway.repository import ReleaseAuditRepository
from gateway.schemas import CapturedConsent, ConsentConfirmation, ProfileRelease, WithheldField
from gateway.upstream import Upstream
from tillit.policy import Policy
from tillit.problems import Forbidden
from tillit.types import utcnow

__all__ = ["GatewayService"]


class GatewayService:
    def __init__(
        self,
        policy: Policy,
        upstream: Upstream,
        audit: ReleaseAuditRepository,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.policy = policy
        self.upstream = upstream
        self.audit = audit
        self.clock = clock

    def _check_purpose(self, caller: Caller, purpose: str) -> None:
        check_channel_purpose(self.policy, caller.channel, purpose)

    async def _check_release_purpose(self, caller: Caller, subject_id: str, purpose: str) -> None:
        """``_check_purpose``, with a refused attempt written to the audit although the request fails."""
        try:
            self._check_purpose(caller, purpose)
        except Forbidden:
            await self.audit.record_apart(
                ReleaseRecord(
                    release_id=str(uuid.uuid4()),
                    client_id=caller.client_id,
                    channel=caller.channel,
                    purpose=purpose,
                    subject_id=subject_id,
                    released=[],
                    withheld=[],
                    released_at=self.clock(),
                    outcome="refused",
                )
            )
            raise

    async def release_profile(
        self, caller: Caller, subject_id: str, purpose: str, *, scope: str = "profiles:read"
    ) -> ProfileRelease:
        """Release for ``purpose``; ``scope`` is what the caller's token needs."""
        release, record = await self.prepare_release(caller, subject_id, purpose, scope=scope)
        await self.audit.record(record)
        return release

    async def prepare_release(
        self, caller: Caller, subject_id: str, purpose: str, *, scope: str
    ) -> tuple[ProfileRelease, ReleaseRow]:
        """The filtered profile and its audit row, not yet recorded.

        The caller records the row before any of the fields leave (decisions first wait for the rules
        service, so that a decision that cannot be made leaves no release behind).
        """
        caller.require(scope)
        await self._check_release_purpose(caller, subject_id, purpose)
        consent, profile = await self.upstream.release_reads(subject_id, purpose)
        now = self.clock()
        decision = decide(self.policy, purpose, profile.fields, consent, now, caller.channel)
        release_id = str(uuid.uuid4())
        withheld = [WithheldField(field=w.field, reason=w.reason) for w in decision.withheld]
        record = ReleaseRow(
            release_id=release_id,
            client_id=caller.client_id,
            channel=caller.channel,
            purpose=purpose,
            subject_id=subject_id,
            released=sorted(decision.released),
            withheld=[msgspec.to_builtins(w) for w in withheld],
            consent_event_id=decision.consent_event_id,
            released_at=now,
        )
        release = ProfileRelease(
            subject_id=subject_id,
            purpose=purpose,
            fields=decision.released,
            withheld=withheld,
            release_id=release_id,
            transformed=decision.transformed,
        )
        return release, record

    async def capture_consent(
        self,
        caller: Caller,
        subject_id: str,
        consent: CapturedConsent,
        *,
        gpc: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        caller.require("consents:write")
        self._check_purpose(caller, consent.purpose)
        event = msgspec.to_builtins(consent)
        event["source"] = f"channel:{caller.client_id}"
        # Keys are the channel's own: scoped by client so two channels' keys never collide.
        scoped_key = f"{caller.client_id}:{idempotency_key}" if idempotency_key else None
        return await self.upstream.record_consent(subject_id, event, gpc=gpc, idempotency_key=scoped_key)

    async def confirm_consent(self, caller: Caller, confirmation: ConsentConfirmation) -> dict[str, Any]:
        """Double opt-in: the token proves the shopper opened the link; the channel only hands it on."""
        caller.require("consents:write")
        return await self.upstream.confirm_consent(msgspec.to_builtins(confirmation))
