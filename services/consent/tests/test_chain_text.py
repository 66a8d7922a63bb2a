"""The COPY-text verifier names exactly what the object verifier names, whatever the rows hold.

Each ledger is rendered as PostgreSQL's ``COPY ... TO STDOUT`` text would send it, then tampered
with field by field; :class:`TextLedgerVerifier` must report what :func:`verify_ledger` reports for
the same rows, including for values its fast path must not vouch for (NULLs, escapes, quotes).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from services.consent.chain import (
    GENESIS_HASH,
    ChainedEvent,
    ChainHead,
    LedgerReport,
    _timestamp,
    canonical_json,
    event_hash,
    personal_digest,
    verify_ledger,
)
from services.consent.chain_text import TextLedgerVerifier
from services.consent.repository import _PG_TIMESTAMP
from tillit.db import Database

_ESCAPES = {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _field(value: Any) -> str:
    """One value as COPY text writes it."""
    if value is None:
        return "\\N"
    return "".join(_ESCAPES.get(char, char) for char in str(value))


def _line(event: ChainedEvent, evidence_text: str | None = None) -> bytes:
    evidence = evidence_text
    if evidence is None and event.evidence is not None:
        evidence = canonical_json(event.evidence).decode()
    values = (
        event.id,
        event.chain_id,
        event.seq,
        event.subject_id,
        event.purpose,
        event.action,
        "null" if event.notice_version is None else event.notice_version,
        event.source,
        _timestamp(event.collected_at),
        _timestamp(event.recorded_at),
        evidence,
        event.personal_salt,
        event.personal_digest,
        event.prev_hash,
        event.hash,
    )
    return "\t".join(_field(value) for value in values).encode() + b"\n"


def _chain(subject: str, length: int, rng: random.Random, evidence: dict[str, Any]) -> list[ChainedEvent]:
    chain_id = f"{rng.getrandbits(64):016x}-chain"
    events, prev = [], GENESIS_HASH
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.getrandbits(30))
    for seq in range(1, length + 1):
        salt = f"{rng.getrandbits(128):032x}"
        personal = personal_digest(salt, subject, evidence)
        fields: dict[str, Any] = {
            "id": f"{rng.getrandbits(64):016x}-event",
            "chain_id": chain_id,
            "seq": seq,
            "subject_id": subject,
            "purpose": "marketing.communications.email",
            "action": "given" if seq % 2 else "withdrawn",
            "notice_version": None if seq % 3 == 0 else seq,
            "source": "preference_page",
            "collected_at": moment,
            "recorded_at": moment + timedelta(seconds=seq),
        }
        digest = event_hash(
            chain_id=chain_id,
            seq=seq,
            prev_hash=prev,
            event_id=fields["id"],
            purpose=fields["purpose"],
            action=fields["action"],
            notice_version=fields["notice_version"],
            source=fields["source"],
            collected_at=fields["collected_at"],
            recorded_at=fields["recorded_at"],
            personal=personal,
        )
        events.append(
            ChainedEvent(
                **fields,
                evidence=evidence,
                personal_salt=salt,
                personal_digest=personal,
                prev_hash=prev,
                hash=digest,
            )
        )
        prev = digest
        moment += timedelta(minutes=seq)
    return events


def _ledger(
    evidence: dict[str, Any] | None = None, subjects: Sequence[str] = ("astrid", "lars", "kadri")
) -> tuple[dict[str, ChainHead], list[ChainedEvent]]:
    rng = random.Random(7)  # noqa: S311 - reproducible test data, not secrets
    evidence = evidence if evidence is not None else {"ip": "10.1.2.0", "user_agent": "Firefox", "page": "/p"}
    events: list[ChainedEvent] = []
    heads: dict[str, ChainHead] = {}
    for number, subject in enumerate(subjects):
        chain = _chain(subject, 3 + number, rng, evidence)
        heads[chain[0].chain_id] = ChainHead(chain[0].chain_id, subject, len(chain), chain[-1].hash)
        events.extend(chain)
    events.sort(key=lambda event: (event.chain_id, event.seq))
    return heads, events


def _text_report(
    heads: dict[str, ChainHead], lines: Sequence[bytes], chunk: int | None = None
) -> tuple[LedgerReport, TextLedgerVerifier]:
    verifier = TextLedgerVerifier(heads)
    data = b"".join(lines)
    size = chunk or len(data) or 1
    for start in range(0, len(data), size):
        verifier.feed_text(data[start : start + size])
    return verifier.finish(), verifier


def _both(
    heads: dict[str, ChainHead], events: Sequence[ChainedEvent], lines: Sequence[bytes] | None = None
) -> LedgerReport:
    expected = verify_ledger(heads, events)
    got, _ = _text_report(heads, lines if lines is not None else [_line(event) for event in events])
    assert got == expected
    return got


def test_an_intact_ledger_verifies_in_any_chunking() -> None:
    heads, events = _ledger()
    lines = [_line(event) for event in events]
    assert verify_ledger(heads, events).ok
    for chunk in (1, 7, 100, 10_000):
        report, _ = _text_report(heads, lines, chunk)
        assert report == verify_ledger(heads, events)
    report, _ = _text_report(heads, [*lines[:-1], lines[-1].rstrip(b"\n")])
    assert report.ok
    assert report.events == len(events)


def test_the_templates_are_the_canonical_encoding() -> None:
    """The fast path accepts an intact ledger without the exact path (it is the slow one)."""
    heads, events = _ledger()
    verifier = TextLedgerVerifier(heads)
    slow_calls: list[int] = []
    verifier.feed = lambda event: slow_calls.append(1) or True  # type: ignore[method-assign]
    verifier.feed_text(b"".join(_line(event) for event in events))
    assert verifier.finish().ok
    assert slow_calls == []


_TAMPERINGS: dict[str, Callable[[ChainedEvent], ChainedEvent]] = {
    "action": lambda e: msgspec.structs.replace(e, action="given" if e.action != "given" else "refused"),
    "purpose": lambda e: msgspec.structs.replace(e, purpose="marketing.other"),
    "source": lambda e: msgspec.structs.replace(e, source="import"),
    "notice": lambda e: msgspec.structs.replace(e, notice_version=(e.notice_version or 0) + 1),
    "notice_null": lambda e: msgspec.structs.replace(e, notice_version=None if e.notice_version else 7),
    "collected": lambda e: msgspec.structs.replace(e, collected_at=e.collected_at + timedelta(microseconds=1)),
    "recorded": lambda e: msgspec.structs.replace(e, recorded_at=e.recorded_at - timedelta(days=1)),
    "evidence": lambda e: msgspec.structs.replace(e, evidence={"ip": "192.0.2.0"}),
    "salt": lambda e: msgspec.structs.replace(e, personal_salt="0" * 32),
    "subject": lambda e: msgspec.structs.replace(e, subject_id="lars" if e.subject_id != "lars" else "astrid"),
    "subject_quote": lambda e: msgspec.structs.replace(e, subject_id=f'{e.subject_id}"'),
    "erased": lambda e: msgspec.structs.replace(e, subject_id=None, evidence=None, personal_salt=None),
    "digest": lambda e: msgspec.structs.replace(e, personal_digest="f" * 64),
    "prev": lambda e: msgspec.structs.replace(e, prev_hash="e" * 64),
    "hash": lambda e: msgspec.structs.replace(e, hash="d" * 64),
    "seq": lambda e: msgspec.structs.replace(e, seq=e.seq + 10),
    "chain": lambda e: msgspec.structs.replace(e, chain_id="no-such-chain"),
    "id": lambda e: msgspec.structs.replace(e, id=e.id + "x"),
    "escaped_id": lambda e: msgspec.structs.replace(e, id=e.id + "\t\\"),
}


@pytest.mark.parametrize("kind", sorted(_TAMPERINGS))
def test_every_tampering_is_named_as_the_object_verifier_names_it(kind: str) -> None:
    heads, events = _ledger()
    for position in range(len(events)):
        tampered = list(events)
        tampered[position] = _TAMPERINGS[kind](events[position])
        tampered.sort(key=lambda event: (event.chain_id, event.seq))
        report = _both(heads, tampered)
        assert report.ok == (kind == "erased"), (kind, position)  # erasure keeps the chain verifiable


def test_removed_and_inserted_events_are_named_alike() -> None:
    heads, events = _ledger()
    for position in range(len(events)):
        assert not _both(heads, events[:position] + events[position + 1 :]).ok
    stray = msgspec.structs.replace(events[0], seq=events[0].seq + 50)
    assert not _both(heads, sorted([*events, stray], key=lambda e: (e.chain_id, e.seq))).ok
    assert not _both({k: v for k, v in list(heads.items())[1:]}, events).ok
    assert not _both(heads, []).ok


def test_values_the_fast_path_cannot_vouch_for_are_checked_exactly() -> None:
    """Quotes, backslashes, control characters and non-ASCII text: valid rows verify, edits do not."""
    evidence = {"page": 'https://shop.example/?q="a\\b"\n', "user_agent": "Møz\tilla \u2028", "ip": "10.0.0.0"}
    heads, events = _ledger(evidence, subjects=('a"b', "c\\d", "e\u00e9"))
    assert _both(heads, events).ok
    assert not _both(heads, [msgspec.structs.replace(events[0], action="refused"), *events[1:]]).ok


def test_evidence_stored_before_it_was_canonical_verifies() -> None:
    """Rows written before evidence was stored sorted: same value, other text; any other value fails."""
    heads, events = _ledger()
    unsorted = [_line(event, msgspec.json.encode(event.evidence).decode()) for event in events]
    assert unsorted != [_line(event) for event in events]
    assert _both(heads, events, unsorted).ok
    spaced = [_line(events[0], '{"ip": "10.1.2.0", "page": "/p", "user_agent": "Firefox"}'), *unsorted[1:]]
    assert _both(heads, events, spaced).ok
    edited = [_line(events[0], '{"ip":"10.1.2.1","page":"/p","user_agent":"Firefox"}'), *unsorted[1:]]
    report, _ = _text_report(heads, edited)
    assert report.first_break is not None
    assert report.first_break.kind == "altered"


def test_a_timestamp_postgresql_sends_as_null_is_altered() -> None:
    heads, events = _ledger()
    lines = [_line(event) for event in events]
    fields = lines[1].split(b"\t")
    fields[8] = b"\\N"
    report, _ = _text_report(heads, [lines[0], b"\t".join(fields), *lines[2:]])
    assert report.first_break is not None
    assert (report.first_break.kind, report.first_break.event_id) == ("altered", events[1].id)


@pytest.mark.anyio
async def test_postgresql_formats_timestamps_as_the_chain_does(database: Database) -> None:
    if database.is_sqlite:
        pytest.skip("the COPY text path is PostgreSQL's")
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 11, 24, 12, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 24, 12, 0, 0, 10, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ]
    outside = ["0001-12-31T23:59:59Z BC", "10000-01-01T00:00:00Z", "infinity", "-infinity"]
    async with database.engine.connect() as connection:
        for literal, expected in [*((m.isoformat(), _timestamp(m)) for m in moments), *((o, None) for o in outside)]:
            expression = _PG_TIMESTAMP.format(f"'{literal}'::timestamptz")
            formatted = await connection.scalar(text(f"SELECT {expression}"))
            assert formatted == expected, literal
