"""Consent receipts are Kantara v1.1 payloads, signed so that anyone can verify them offline."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from joserfc import jws
from joserfc.jwk import ECKey, KeySet, OKPKey

from services.consent.receipts import (
    RECEIPT_TYPE,
    RECEIPT_VERSION,
    ReceiptError,
    ReceiptFacts,
    build_receipt,
    canonical_json,
    receipt_header,
    sign_receipt,
    verify_receipt,
)
from tillit.keys import RECEIPT_KEY, ensure_signing_key, load_public_keys, load_receipt_key, public_keys_path
from tillit.policy import Controller, PostalAddress, load_policy
from tillit.receipt_cli import add_receipt_commands, run_receipt_command, verify_receipt_file
from tillit.settings import REPO_ROOT

# joserfc notes that RFC 9864 supersedes "Ed25519" with "Ed25519"; receipts keep EdDSA on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")

SCHEMA_FILE = "kantara-consent-receipt-v1_1-schema.json"
GIVEN_AT = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
CONTROLLER = Controller(
    name="Nordvik Mode AB",
    contact="Data Protection Officer",
    email="dataskydd@nordvikmode.example.com",
    phone="+46 8 46 50 04 10",
    address=PostalAddress(street="Exempelgatan 12", locality="Stockholm", postal_code="111 22", country="SE"),
    jurisdiction="SE",
    privacy_policy_url="https://nordvikmode.example.com/integritetspolicy",
    url="https://nordvikmode.example.com/",
)


def _schema_path() -> Path:
    """``TILLIT_STANDARDS_DIR`` when set, else the shared standards beside the repository; skips if absent."""
    configured = os.environ.get("TILLIT_STANDARDS_DIR")
    if configured:
        candidates = [Path(configured)]
    else:
        candidates = [REPO_ROOT.parent / "shared" / "standards", Path("/work/shared/standards")]
    for directory in candidates:
        if (directory / SCHEMA_FILE).is_file():
            return directory / SCHEMA_FILE
    where = ", ".join(str(directory) for directory in candidates)
    pytest.skip(f"the Kantara schema {SCHEMA_FILE} is in none of {where}; set TILLIT_STANDARDS_DIR to its directory")


@pytest.fixture(scope="module")
def kantara() -> jsonschema.Draft4Validator:
    """The published Kantara v1.1 schema; its ``//`` comment lines are not JSON and are dropped."""
    text = _schema_path().read_text(encoding="utf-8")
    schema = json.loads("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//")))
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def assert_valid(validator: jsonschema.Draft4Validator, payload: dict[str, Any]) -> None:
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(payload)]
    assert errors == []


def facts(**changes: Any) -> ReceiptFacts:
    base = ReceiptFacts(
        event_id="0b6c3c57-8a52-4b40-9d5e-2f1f3a0c7e11",
        subject_id="s_7Yx2q",
        purpose="marketing.communications.email",
        purpose_title="E-mail newsletter and offers",
        legal_basis="consent",
        categories=["user.contact.email", "user.name.first", "user.demographic.profile"],
        action="given",
        collected_at=GIVEN_AT,
        notice_version=3,
        notice_text="Vi skickar nyhetsbrev och erbjudanden till din e-postadress.",
        language="sv",
        source="preference_page",
        expires_at=datetime(2028, 3, 1, 10, 0, tzinfo=UTC),
        ledger_hash=hashlib.sha256(b"ledger event").hexdigest(),
    )
    return msgspec.structs.replace(base, **changes)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    ensure_signing_key(directory, RECEIPT_KEY)
    return directory


@pytest.fixture
def key(keys_dir: Path) -> OKPKey:
    return load_receipt_key(keys_dir)


@pytest.fixture
def public_keys(keys_dir: Path) -> KeySet:
    return load_public_keys(keys_dir, RECEIPT_KEY)


def segments(token: str) -> list[str]:
    return token.split(".")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


VARIANTS: dict[str, Callable[[], ReceiptFacts]] = {
    "given": facts,
    "given-no-expiry-no-notice": partial(facts, expires_at=None, notice_version=None, notice_text=None),
    "withdrawn": partial(facts, action="withdrawn", source="channel:demo-email"),
    "withdrawn-no-expiry-no-notice": partial(
        facts, action="withdrawn", expires_at=None, notice_version=None, notice_text=None
    ),
    "third-party": partial(
        facts,
        purpose="marketing.advertising.third_party.targeted",
        purpose_title="Personalised ads on other sites",
        categories=["user.contact.email"],
    ),
    "third-party-named": partial(facts, purpose="third_party_sharing", third_parties=["Example Ads Ltd"]),
    "contract": partial(
        facts, purpose="essential.service.notifications.email", legal_basis="contract", expires_at=None
    ),
    "sensitive": partial(facts, categories=["user.health_and_medical", "user.contact.email"]),
    "import": partial(facts, source="import:crm-2024"),
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_receipt_validates_against_the_kantara_schema(
    kantara: jsonschema.Draft4Validator, variant: Callable[[], ReceiptFacts]
) -> None:
    assert_valid(kantara, build_receipt(variant(), CONTROLLER))


def test_the_schema_check_is_not_vacuous(kantara: jsonschema.Draft4Validator) -> None:
    receipt = build_receipt(facts(), CONTROLLER)
    del receipt["policyUrl"]
    receipt["services"][0]["purposes"][0]["thirdPartyDisclosure"] = True
    messages = [error.message for error in kantara.iter_errors(receipt)]
    assert any("policyUrl" in message for message in messages)
    assert len(messages) == 2


def test_the_shipped_controller_yields_a_valid_receipt(kantara: jsonschema.Draft4Validator) -> None:
    controller = load_policy(REPO_ROOT / "policies").controller
    assert controller is not None
    receipt = build_receipt(facts(), controller)
    assert_valid(kantara, receipt)
    assert receipt["piiControllers"][0]["piiController"] == controller.name


def test_a_given_consent_maps_onto_the_kantara_fields() -> None:
    event = facts()
    receipt = build_receipt(event, CONTROLLER)
    purpose = receipt["services"][0]["purposes"][0]
    assert receipt["version"] == RECEIPT_VERSION
    assert receipt["jurisdiction"] == "SE"
    assert receipt["consentTimestamp"] == int(GIVEN_AT.timestamp())
    assert receipt["consentReceiptID"] == event.event_id
    assert receipt["piiPrincipalId"] == event.subject_id
    assert receipt["language"] == "sv"
    assert receipt["policyUrl"] == CONTROLLER.privacy_policy_url
    assert receipt["piiControllers"][0]["address"] == {
        "streetAddress": "Exempelgatan 12",
        "postalCode": "111 22",
        "addressLocality": "Stockholm",
        "addressCountry": "SE",
    }
    assert receipt["tillit:action"] == "given"
    assert receipt["tillit:ledgerHash"] == event.ledger_hash
    assert receipt["sensitive"] is False
    assert receipt["spiCat"] == []
    assert "publicKey" not in receipt
    assert purpose["consentType"] == "EXPLICIT"
    assert purpose["purposeCategory"] == ["6 - Marketing"]
    assert purpose["piiCategory"] == ["1 - Biographical", "2 - Contact", "16 - Profiling"]
    assert purpose["thirdPartyDisclosure"] is False
    assert "thirdPartyName" not in purpose
    assert purpose["tillit:dataUse"] == event.purpose
    assert purpose["tillit:dataCategories"] == event.categories
    assert purpose["tillit:noticeVersion"] == 3
    assert purpose["tillit:noticeText"] == event.notice_text
    assert purpose["tillit:expiresAt"] == "2028-03-01T10:00:00Z"
    assert "2028-03-01T10:00:00Z" in purpose["termination"]
    assert "Preference page" in receipt["collectionMethod"]


def test_a_withdrawal_says_so() -> None:
    withdrawn_at = GIVEN_AT + timedelta(days=10)
    receipt = build_receipt(facts(action="withdrawn", collected_at=withdrawn_at), CONTROLLER)
    purpose = receipt["services"][0]["purposes"][0]
    assert receipt["tillit:action"] == "withdrawn"
    assert receipt["consentTimestamp"] == int(withdrawn_at.timestamp())
    assert purpose["termination"].startswith("WITHDRAWN on 2026-03-11T10:00:00Z")


def test_optional_facts_are_left_out_rather_than_null() -> None:
    receipt = build_receipt(facts(expires_at=None, notice_version=None, notice_text=None), CONTROLLER)
    purpose = receipt["services"][0]["purposes"][0]
    assert not {"tillit:expiresAt", "tillit:noticeVersion", "tillit:noticeText"} & purpose.keys()
    assert purpose["termination"].startswith("Until withdrawn.")


@pytest.mark.parametrize(
    ("source", "consent_type", "method"),
    [
        ("preference_page", "EXPLICIT", "Preference page"),
        ("quiz", "EXPLICIT", "Style quiz"),
        ("channel:demo-email", "EXPLICIT", "demo-email channel"),
        ("gpc", "EXPLICIT", "Global Privacy Control"),
        ("import:crm-2024", "UNSPECIFIED", "Imported from the shop's earlier consent records (crm-2024)"),
        ("carrier_pigeon", "UNSPECIFIED", "Recorded via carrier_pigeon"),
    ],
)
def test_the_source_gives_collection_method_and_consent_type(source: str, consent_type: str, method: str) -> None:
    receipt = build_receipt(facts(source=source), CONTROLLER)
    assert receipt["services"][0]["purposes"][0]["consentType"] == consent_type
    assert method in receipt["collectionMethod"]
    assert receipt["tillit:source"] == source


def test_a_purpose_not_based_on_consent_is_marked_not_applicable() -> None:
    receipt = build_receipt(
        facts(purpose="essential.service.notifications.email", legal_basis="contract", expires_at=None), CONTROLLER
    )
    purpose = receipt["services"][0]["purposes"][0]
    assert purpose["consentType"] == "N/A"
    assert purpose["purposeCategory"] == ["2 - Contracted Service"]
    assert "contract" in purpose["termination"]


def test_third_party_purposes_disclose_and_name_the_recipients() -> None:
    ads = build_receipt(facts(purpose="marketing.advertising.third_party.targeted"), CONTROLLER)
    purpose = ads["services"][0]["purposes"][0]
    assert purpose["thirdPartyDisclosure"] is True
    assert purpose["purposeCategory"] == ["9 - Sharing for Marketing"]
    assert "Nordvik Mode AB's privacy policy" in purpose["thirdPartyName"]
    named = build_receipt(facts(third_parties=["Example Ads Ltd", "Other Ads AB"]), CONTROLLER)
    assert named["services"][0]["purposes"][0]["thirdPartyName"] == "Example Ads Ltd, Other Ads AB"


def test_special_categories_mark_the_receipt_sensitive() -> None:
    special = ["user.demographic.religious_belief", "user.health_and_medical.genetic"]
    receipt = build_receipt(facts(categories=["user.contact.email", *special]), CONTROLLER)
    assert receipt["sensitive"] is True
    assert receipt["spiCat"] == special


def test_policy_url_and_public_key_can_be_given() -> None:
    notice_url = "https://nordvikmode.example.com/notices/3"
    receipt = build_receipt(facts(), CONTROLLER, policy_url=notice_url, public_key="{}")
    assert receipt["policyUrl"] == notice_url
    assert receipt["publicKey"] == "{}"


def test_times_in_other_zones_are_stated_in_utc() -> None:
    stockholm = timezone(timedelta(hours=1))
    receipt = build_receipt(facts(collected_at=datetime(2026, 3, 1, 11, 0, tzinfo=stockholm)), CONTROLLER)
    assert receipt["consentTimestamp"] == int(GIVEN_AT.timestamp())
    assert receipt["tillit:consentTime"] == "2026-03-01T10:00:00Z"


@pytest.mark.parametrize(
    ("changes", "controller", "problem"),
    [
        ({"collected_at": datetime(2026, 3, 1, 10, 0)}, CONTROLLER, "time zone"),
        ({"expires_at": datetime(2028, 3, 1, 10, 0)}, CONTROLLER, "time zone"),
        ({"ledger_hash": "not-a-hash"}, CONTROLLER, "ledger_hash"),
        ({"language": "swedish"}, CONTROLLER, "ISO 639-1"),
        ({"subject_id": ""}, CONTROLLER, "subject_id is empty"),
        ({"action": "expired"}, CONTROLLER, "has no receipt"),
        ({}, None, "no data controller"),
    ],
)
def test_facts_that_cannot_make_a_receipt_are_refused(
    changes: dict[str, Any], controller: Controller | None, problem: str
) -> None:
    with pytest.raises(ReceiptError, match=problem):
        build_receipt(facts(**changes), controller)


def test_a_signed_receipt_verifies_and_returns_the_payload(key: OKPKey, public_keys: KeySet) -> None:
    receipt = build_receipt(facts(), CONTROLLER)
    token = sign_receipt(receipt, key)
    assert verify_receipt(token, public_keys) == receipt
    assert receipt_header(token) == {"alg": "Ed25519", "kid": key.kid, "typ": RECEIPT_TYPE}
    assert key.kid is not None
    assert key.kid.startswith(f"{RECEIPT_KEY}-")


def test_the_signed_payload_is_canonical_json(key: OKPKey) -> None:
    receipt = build_receipt(facts(), CONTROLLER)
    token = sign_receipt(receipt, key)
    payload = base64.urlsafe_b64decode(segments(token)[1] + "==")
    assert payload == canonical_json(receipt)
    assert payload == canonical_json(dict(reversed(receipt.items())))
    assert b"\n" not in payload
    assert "Vi skickar nyhetsbrev" in payload.decode("utf-8")
    assert sign_receipt(dict(reversed(receipt.items())), key) == token  # Ed25519 is deterministic


def test_canonical_json_is_the_sorted_compact_utf8_form_any_json_library_gives() -> None:
    """A receipt's bytes are those of ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)``: a verifier can re-encode a payload it decoded and compare."""
    receipt = build_receipt(facts(), CONTROLLER)
    awkward = {
        "zeta": 'quote " backslash \\ slash / tab \t newline \n bell \u0007 del \u007f',
        "alpha": ["Åsa Ödmark", "日本", "emoji \U0001f600", "line sep \u2028"],
        "nested": {"b": [3, -1, 0], "a": {"y": True, "x": None}},
        "number": 12345678901234,
    }
    for payload in (receipt, awkward):
        expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert canonical_json(payload) == expected


def test_a_tampered_payload_is_refused(key: OKPKey, public_keys: KeySet) -> None:
    receipt = build_receipt(facts(), CONTROLLER)
    header, _, signature = segments(sign_receipt(receipt, key))
    forged = dict(receipt, **{"tillit:action": "withdrawn"})
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(f"{header}.{b64(canonical_json(forged))}.{signature}", public_keys)


def test_a_tampered_signature_is_refused(key: OKPKey, public_keys: KeySet) -> None:
    header, payload, signature = segments(sign_receipt(build_receipt(facts(), CONTROLLER), key))
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(f"{header}.{payload}.{flipped}", public_keys)


def test_a_receipt_signed_by_another_key_with_the_same_kid_is_refused(key: OKPKey, public_keys: KeySet) -> None:
    impostor = OKPKey.generate_key("Ed25519", parameters={"kid": key.kid, "alg": "Ed25519"})
    token = sign_receipt(build_receipt(facts(), CONTROLLER), impostor)
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(token, public_keys)


def test_a_receipt_signed_by_an_unknown_key_is_refused(public_keys: KeySet) -> None:
    stranger = OKPKey.generate_key("Ed25519", parameters={"kid": "someone-else", "alg": "Ed25519"})
    token = sign_receipt(build_receipt(facts(), CONTROLLER), stranger)
    with pytest.raises(ReceiptError, match="no key 'someone-else'"):
        verify_receipt(token, public_keys)


def test_a_token_signed_with_another_algorithm_is_refused(key: OKPKey) -> None:
    ec_key = ECKey.generate_key("P-256", parameters={"kid": key.kid})
    header = {"alg": "ES256", "kid": key.kid, "typ": RECEIPT_TYPE}
    token = jws.serialize_compact(header, canonical_json(build_receipt(facts(), CONTROLLER)), ec_key)
    with pytest.raises(ReceiptError, match="alg 'ES256'"):
        verify_receipt(token, KeySet([ec_key]))


def test_an_unsigned_token_is_refused(key: OKPKey, public_keys: KeySet) -> None:
    header = b64(json.dumps({"alg": "none", "kid": key.kid, "typ": RECEIPT_TYPE}).encode())
    token = f"{header}.{b64(canonical_json(build_receipt(facts(), CONTROLLER)))}."
    with pytest.raises(ReceiptError, match="alg 'none'"):
        verify_receipt(token, public_keys)


@pytest.mark.parametrize("typ", ["JWT", "consent-receipt", None])
def test_a_token_of_another_type_is_refused(key: OKPKey, public_keys: KeySet, typ: str | None) -> None:
    header: dict[str, Any] = {"alg": "Ed25519", "kid": key.kid}
    if typ is not None:
        header["typ"] = typ
    token = jws.serialize_compact(
        header, canonical_json(build_receipt(facts(), CONTROLLER)), key, algorithms=["Ed25519"]
    )
    with pytest.raises(ReceiptError, match="typ"):
        verify_receipt(token, public_keys)


def test_the_full_media_type_is_accepted_as_typ(key: OKPKey, public_keys: KeySet) -> None:
    header = {"alg": "Ed25519", "kid": key.kid, "typ": f"application/{RECEIPT_TYPE.upper()}"}
    receipt = build_receipt(facts(), CONTROLLER)
    token = jws.serialize_compact(header, canonical_json(receipt), key, algorithms=["Ed25519"])
    assert verify_receipt(token, public_keys) == receipt


def test_a_signed_payload_that_is_not_a_receipt_is_refused(key: OKPKey, public_keys: KeySet) -> None:
    header = {"alg": "Ed25519", "kid": key.kid, "typ": RECEIPT_TYPE}
    token = jws.serialize_compact(header, b'{"sub": "x"}', key, algorithms=["Ed25519"])
    with pytest.raises(ReceiptError, match=r"not a KI-CR-v1\.1\.0 consent receipt"):
        verify_receipt(token, public_keys)


@pytest.mark.parametrize("token", ["", "   ", "not-a-token", "a.b.c", "x" * 300_000])
def test_garbage_is_refused_with_a_value_error(public_keys: KeySet, token: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ReceiptError is a ValueError; the message varies by case
        verify_receipt(token, public_keys)


def test_only_a_private_ed25519_key_signs(key: OKPKey) -> None:
    receipt = build_receipt(facts(), CONTROLLER)
    public_only = OKPKey.import_key(key.as_dict(private=False))
    with pytest.raises(ReceiptError, match="private Ed25519"):
        sign_receipt(receipt, public_only)
    with pytest.raises(ReceiptError, match="private Ed25519"):
        sign_receipt(receipt, ECKey.generate_key("P-256", parameters={"kid": "k"}))  # type: ignore[arg-type]
    with pytest.raises(ReceiptError, match="no kid"):
        sign_receipt(receipt, OKPKey.generate_key("Ed25519"))
    with pytest.raises(ReceiptError, match=r"not a KI-CR-v1\.1\.0"):
        sign_receipt({"hello": "world"}, key)


# The command-line verifier (tillit receipt verify).


@pytest.fixture
def signed(key: OKPKey) -> str:
    return sign_receipt(build_receipt(facts(), CONTROLLER), key)


def test_the_cli_verifies_a_bare_token(
    tmp_path: Path, keys_dir: Path, key: OKPKey, signed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.jws"
    path.write_text(signed + "\n")
    assert verify_receipt_file(path, public_keys_path(keys_dir, RECEIPT_KEY)) == 0
    out = capsys.readouterr().out
    for expected in (
        f"signed by key {key.kid} (Ed25519)",
        "receipt id   0b6c3c57-8a52-4b40-9d5e-2f1f3a0c7e11",
        "subject      s_7Yx2q",
        "purpose      E-mail newsletter and offers (marketing.communications.email)",
        "action       consent given",
        "when         2026-03-01T10:00:00Z",
        "expires      2028-03-01T10:00:00Z",
        "controller   Nordvik Mode AB <dataskydd@nordvikmode.example.com>, jurisdiction SE",
        f"ledger hash  {facts().ledger_hash}",
    ):
        assert expected in out


def test_the_cli_reads_a_json_wrapper_and_shows_a_withdrawal(
    tmp_path: Path, keys_dir: Path, key: OKPKey, capsys: pytest.CaptureFixture[str]
) -> None:
    token = sign_receipt(build_receipt(facts(action="withdrawn"), CONTROLLER), key)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps({"receipt": token, "event_id": "ignored"}))
    assert verify_receipt_file(path, str(public_keys_path(keys_dir, RECEIPT_KEY))) == 0
    assert "action       consent WITHDRAWN" in capsys.readouterr().out


@pytest.fixture
def served_keys(keys_dir: Path) -> Iterator[str]:
    """The keys directory over HTTP on a free local port, as a published JWKS would be."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(keys_dir))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_cli_fetches_the_jwks_from_a_url(
    tmp_path: Path, served_keys: str, signed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "receipt.jws"
    path.write_text(signed)
    assert verify_receipt_file(path, f"{served_keys}/{RECEIPT_KEY}.public.jwks.json") == 0
    assert "Receipt verified" in capsys.readouterr().out
    assert verify_receipt_file(path, f"{served_keys}/missing.json") == 1
    assert "cannot load the key set" in capsys.readouterr().err


def test_the_cli_refuses_a_tampered_receipt(
    tmp_path: Path, keys_dir: Path, signed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    header, _, signature = segments(signed)
    forged = dict(build_receipt(facts(), CONTROLLER), piiPrincipalId="someone-else")
    path = tmp_path / "receipt.jws"
    path.write_text(f"{header}.{b64(canonical_json(forged))}.{signature}")
    assert verify_receipt_file(path, public_keys_path(keys_dir, RECEIPT_KEY)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "receipt NOT verified: the signature does not verify" in captured.err


def test_the_cli_refuses_a_receipt_from_another_key(
    tmp_path: Path, signed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    other_keys = tmp_path / "other"
    ensure_signing_key(other_keys, RECEIPT_KEY)
    path = tmp_path / "receipt.jws"
    path.write_text(signed)
    assert verify_receipt_file(path, public_keys_path(other_keys, RECEIPT_KEY)) == 1
    assert "receipt NOT verified: no key" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "jwks_name", "message"),
    [
        (None, RECEIPT_KEY, "cannot read the receipt"),
        ('{"not_receipt": 1}', RECEIPT_KEY, 'no "receipt" string'),
        ("{broken", RECEIPT_KEY, "does not parse"),
        ("signed", "missing", "cannot load the key set"),
    ],
)
def test_the_cli_says_why_it_cannot_verify(
    tmp_path: Path,
    keys_dir: Path,
    signed: str,
    capsys: pytest.CaptureFixture[str],
    content: str | None,
    jwks_name: str,
    message: str,
) -> None:
    path = tmp_path / "receipt.jws"
    if content is not None:
        path.write_text(signed if content == "signed" else content)
    assert verify_receipt_file(path, public_keys_path(keys_dir, jwks_name)) == 1
    assert message in capsys.readouterr().err


def test_the_receipt_command_defaults_to_the_consent_services_published_key(
    tmp_path: Path, keys_dir: Path, signed: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TILLIT_KEYS_DIR", str(keys_dir))
    path = tmp_path / "receipt.jws"
    path.write_text(signed)
    parser = argparse.ArgumentParser(prog="tillit")
    add_receipt_commands(parser.add_subparsers(dest="command", required=True))
    assert run_receipt_command(parser.parse_args(["receipt", "verify", str(path)])) == 0
    assert "Receipt verified" in capsys.readouterr().out
    monkeypatch.setenv("TILLIT_KEYS_DIR", str(tmp_path / "nowhere"))
    assert run_receipt_command(parser.parse_args(["receipt", "verify", str(path)])) == 1
    assert "cannot load the key set" in capsys.readouterr().err
