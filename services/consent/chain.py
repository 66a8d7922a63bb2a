"""The consent ledger's hash chains: how an event is hashed, and how the ledger is verified.

Design
------
The ledger is one **chain per subject**, not one global chain. Every event names its chain and its
position in it (``seq`` = 1, 2, 3 ...) and carries the hash of the previous event of that chain, and
``(chain_id, seq)`` is unique. A writer therefore only has to serialize with writers of the *same*
subject (a row lock on the subject's chain head) — shoppers never queue behind each other, which a
single global chain would force. Each chain head records the chain's length and last hash, so
deleting a subject's *latest* event is caught too: the head then points past the end of the chain.

An event's hash covers everything the event states — chain, position, previous hash, id, purpose,
action, notice version, source, both timestamps — and, instead of the personal data itself, a
*personal digest*: SHA-256 over a random per-event salt, the subject id and the evidence. Erasure
(a later part) can then delete subject id, evidence and salt while the chain stays verifiable, and
the remaining digest cannot be matched against a guessed subject id because the salt is gone.

The canonical encoding is msgspec JSON with keys sorted and timestamps as UTC ISO-8601 with
microseconds, prefixed by a version tag so the encoding can evolve.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

__all__ = [
    "ENCODING_VERSION",
    "GENESIS_HASH",
    "ChainHead",
    "ChainedEvent",
    "LedgerBreak",
    "LedgerReport",
    "LedgerVerifier",
    "canonical_json",
    "event_hash",
    "personal_digest",
    "verify_ledger",
]

GENESIS_HASH: Final = "0" * 64
ENCODING_VERSION: Final = "tillit-consent-ledger/1"
_encoder = msgspec.json.Encoder(order="sorted")


def _timestamp(moment: datetime) -> str:
    """UTC, microseconds, ``Z``: ``2026-11-24T12:00:00.000000Z``.

    Formatted from the fields (the same text as ``isoformat(timespec="microseconds")``): a third of
    the cost of converting and calling ``isoformat``, and verification formats two per event. The
    database answers timestamps in UTC already, so the conversion is only made for other offsets.
    """
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - %-formatting of ints is the fastest here
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


def canonical_json(value: Any) -> bytes:
    """``value`` encoded the way the chain hashes it (msgspec JSON, keys sorted)."""
    return _encoder.encode(value)


def personal_digest(salt: str, subject_id: str, evidence: Mapping[str, Any]) -> str:
    """SHA-256 over the personal parts of an event, salted so it cannot be matched by guessing."""
    body = _encoder.encode({"salt": salt, "subject_id": subject_id, "evidence": dict(evidence)})
    return hashlib.sha256(body).hexdigest()


class ChainedEvent(msgspec.Struct, frozen=True):
    """The stored columns the chain covers, as read back from the database."""

    id: str
    chain_id: str
    seq: int
    subject_id: str | None
    purpose: str
    action: str
    notice_version: int | None
    source: str
    collected_at: datetime
    recorded_at: datetime
    evidence: dict[str, Any] | None
    personal_salt: str | None
    personal_digest: str
    prev_hash: str
    hash: str


class _HashedFields(msgspec.Struct, frozen=True):
    """What an event's hash covers. Fields in sorted order: the encoding is sorted JSON."""

    action: str
    chain: str
    collected_at: str
    id: str
    notice_version: int | None
    personal: str
    prev: str
    purpose: str
    recorded_at: str
    seq: int
    source: str
    v: str


def event_hash(
    *,
    chain_id: str,
    seq: int,
    prev_hash: str,
    event_id: str,
    purpose: str,
    action: str,
    notice_version: int | None,
    source: str,
    collected_at: datetime,
    recorded_at: datetime,
    personal: str,
) -> str:
    body = _encoder.encode(
        _HashedFields(
            action=action,
            chain=chain_id,
            collected_at=_timestamp(collected_at),
            id=event_id,
            notice_version=notice_version,
            personal=personal,
            prev=prev_hash,
            purpose=purpose,
            recorded_at=_timestamp(recorded_at),
            seq=seq,
            source=source,
            v=ENCODING_VERSION,
        )
    )
    return hashlib.sha256(body).hexdigest()


class ChainHead(msgspec.Struct, frozen=True):
    chain_id: str
    subject_id: str | None
    length: int
    head_hash: str


BreakKind = Literal["altered", "broken_link", "missing", "inserted", "reassigned", "unknown_chain"]


class LedgerBreak(msgspec.Struct, frozen=True):
    """The first place where the ledger is not what was written."""

    kind: BreakKind
    chain_id: str
    seq: int
    event_id: str | None
    subject_id: str | None
    detail: str


class LedgerReport(msgspec.Struct, frozen=True):
    ok: bool
    chains: int
    events: int
    first_break: LedgerBreak | None = None


def _check_event(event: ChainedEvent, expected_seq: int, prev_hash: str, head: ChainHead) -> LedgerBreak | None:
    def found(kind: BreakKind, detail: str, seq: int | None = None) -> LedgerBreak:
        return LedgerBreak(
            kind=kind,
            chain_id=event.chain_id,
            seq=event.seq if seq is None else seq,
            event_id=event.id,
            subject_id=head.subject_id,
            detail=detail,
        )

    if event.seq > head.length:
        return found("inserted", f"event at position {event.seq} lies beyond the chain head ({head.length} events)")
    if event.seq != expected_seq:
        return found(
            "missing",
            f"the event at position {expected_seq} is missing (the next one found is {event.seq})",
            seq=expected_seq,
        )
    if event.subject_id is not None and event.subject_id != head.subject_id:
        return found("reassigned", f"the event names subject {event.subject_id!r}, its chain {head.subject_id!r}")
    if event.subject_id is not None and event.personal_salt is not None and event.evidence is not None:
        recomputed = personal_digest(event.personal_salt, event.subject_id, event.evidence)
        if recomputed != event.personal_digest:
            return found("altered", "its subject id or evidence differ from what was recorded")
    if event.prev_hash != prev_hash:
        return found("broken_link", "it does not follow the event before it (an event was removed or replaced)")
    recomputed = event_hash(
        chain_id=event.chain_id,
        seq=event.seq,
        prev_hash=event.prev_hash,
        event_id=event.id,
        purpose=event.purpose,
        action=event.action,
        notice_version=event.notice_version,
        source=event.source,
        collected_at=event.collected_at,
        recorded_at=event.recorded_at,
        personal=event.personal_digest,
    )
    if recomputed != event.hash:
        return found("altered", "its content differs from what was recorded")
    return None


class LedgerVerifier:
    """Walks events (ordered by chain, then position) against the chain heads, one at a time.

    Feeding events one by one keeps memory constant however long the ledger is. Stops at the first
    break; a chain whose events end before its head says is missing its latest events, and a head
    whose chain has no events at all lost every one of them.
    """

    def __init__(self, heads: Mapping[str, ChainHead]) -> None:
        self._heads = heads
        self._walked: set[str] = set()
        self._current: ChainHead | None = None
        self._expected_seq = 1
        self._prev_hash = GENESIS_HASH
        self._events = 0
        self.first_break: LedgerBreak | None = None

    def feed(self, event: ChainedEvent) -> bool:
        """Check the next event; False once a break has been found."""
        if self.first_break is not None:
            return False
        if self._current is None or event.chain_id != self._current.chain_id:
            if self._current is not None and self._end_of_chain(self._current):
                return False
            head = self._heads.get(event.chain_id)
            if head is None:
                self.first_break = LedgerBreak(
                    kind="unknown_chain",
                    chain_id=event.chain_id,
                    seq=event.seq,
                    event_id=event.id,
                    subject_id=event.subject_id,
                    detail="the event belongs to no recorded chain (inserted, or its chain head was removed)",
                )
                return False
            self._current, self._expected_seq, self._prev_hash = head, 1, GENESIS_HASH
            self._walked.add(head.chain_id)
        self.first_break = _check_event(event, self._expected_seq, self._prev_hash, self._current)
        if self.first_break is not None:
            return False
        self._events += 1
        self._expected_seq += 1
        self._prev_hash = event.hash
        return True

    def _end_of_chain(self, head: ChainHead) -> bool:
        held = self._expected_seq - 1
        if held < head.length:
            self.first_break = LedgerBreak(
                kind="missing",
                chain_id=head.chain_id,
                seq=self._expected_seq,
                event_id=None,
                subject_id=head.subject_id,
                detail=f"the chain head records {head.length} events but the ledger holds {held}: "
                "the latest events were removed",
            )
        elif self._prev_hash != head.head_hash:
            self.first_break = LedgerBreak(
                kind="altered",
                chain_id=head.chain_id,
                seq=head.length,
                event_id=None,
                subject_id=head.subject_id,
                detail="the last event's hash differs from the one the chain head recorded",
            )
        return self.first_break is not None

    def finish(self) -> LedgerReport:
        if self.first_break is None and self._current is not None:
            self._end_of_chain(self._current)
        if self.first_break is None:
            for head in self._heads.values():
                if head.length > 0 and head.chain_id not in self._walked:
                    self.first_break = LedgerBreak(
                        kind="missing",
                        chain_id=head.chain_id,
                        seq=1,
                        event_id=None,
                        subject_id=head.subject_id,
                        detail=f"the chain head records {head.length} events but every one of them was removed",
                    )
                    break
        return LedgerReport(
            ok=self.first_break is None,
            chains=len(self._walked),
            events=self._events,
            first_break=self.first_break,
        )


def verify_ledger(heads: Mapping[str, ChainHead], events: Iterable[ChainedEvent]) -> LedgerReport:
    """Verify a whole ledger held in memory (see :class:`LedgerVerifier`)."""
    verifier = LedgerVerifier(heads)
    for event in events:
        if not verifier.feed(event):
            break
    return verifier.finish()
