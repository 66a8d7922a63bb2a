"""``tillit receipt verify FILE [--jwks PATH_OR_URL]``: check a signed consent receipt offline.

FILE holds the compact JWS, or a JSON object with it under ``"receipt"`` (as the consent API and
the data export hand it out); ``-`` reads standard input. The JWKS comes from a file or an http(s)
URL; by default it is the consent service's published receipt key under the keys directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from services.consent.receipts import MAX_RECEIPT_CHARS, ReceiptError, receipt_header, verify_receipt
from tillit.keys import RECEIPT_ALGORITHM, RECEIPT_KEY, public_keys_path
from tillit.settings import load_settings

__all__ = [
    "add_receipt_commands",
    "default_jwks_path",
    "load_jwks",
    "read_receipt_token",
    "run_receipt_command",
    "verify_receipt_file",
]

_MAX_JWKS_BYTES = 1024 * 1024
_FETCH_TIMEOUT = 10.0


def default_jwks_path() -> Path:
    """The consent service's published receipt JWKS (``TILLIT_KEYS_DIR`` or the data dir's ``keys/``)."""
    return public_keys_path(load_settings("consent").keys_dir, RECEIPT_KEY)


def read_receipt_token(path: Path) -> str:
    """The compact JWS held in ``path`` (``-`` for stdin): the bare token or ``{"receipt": "<jws>"}``."""
    text = sys.stdin.read(MAX_RECEIPT_CHARS * 2) if str(path) == "-" else path.read_text(encoding="utf-8")
    text = text.strip()
    if not text.startswith("{"):
        return text
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ReceiptError(f"the file looks like JSON but does not parse: {exc}") from exc
    token = document.get("receipt") if isinstance(document, dict) else None
    if not isinstance(token, str):
        raise ReceiptError('the JSON object has no "receipt" string holding the signed receipt')
    return token


def load_jwks(source: Path | str) -> KeySet:
    """A key set from a JWKS file or http(s) URL; a single JWK is accepted too."""
    text = str(source)
    if text.startswith(("https://", "http://")):
        response = httpx.get(text, timeout=_FETCH_TIMEOUT, follow_redirects=True)
        response.raise_for_status()
        raw = response.content
    else:
        raw = Path(source).read_bytes()
    if len(raw) > _MAX_JWKS_BYTES:
        raise ValueError(f"larger than {_MAX_JWKS_BYTES} bytes; not a JWKS")
    document = json.loads(raw)
    if isinstance(document, dict) and "keys" not in document and "kty" in document:
        document = {"keys": [document]}
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS (expected an object with a "keys" list)')
    return KeySet.import_key_set(document)


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, int):
        return "?"
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _summary(payload: dict[str, Any], kid: str) -> list[str]:
    services = payload.get("services") or [{}]
    purpose: dict[str, Any] = (services[0].get("purposes") or [{}])[0]
    controllers = payload.get("piiControllers") or [{}]
    controller: dict[str, Any] = controllers[0]
    action = payload.get("tillit:action", "given")
    purpose_name = purpose.get("purpose", "?")
    if "tillit:dataUse" in purpose:
        purpose_name = f"{purpose_name} ({purpose['tillit:dataUse']})"
    lines = [
        f"Receipt verified: signed by key {kid} ({RECEIPT_ALGORITHM})",
        f"  receipt id   {payload.get('consentReceiptID', '?')}",
        f"  subject      {payload.get('piiPrincipalId', '?')}",
        f"  purpose      {purpose_name}",
        f"  action       consent {'WITHDRAWN' if action == 'withdrawn' else action}",
        f"  when         {_when(payload.get('consentTimestamp'))}",
    ]
    if "tillit:expiresAt" in purpose:
        lines.append(f"  expires      {purpose['tillit:expiresAt']}")
    if "tillit:noticeVersion" in purpose:
        lines.append(
            f"  notice       version {purpose['tillit:noticeVersion']}, language {payload.get('language', '?')}"
        )
    lines += [
        f"  method       {payload.get('collectionMethod', '?')}",
        f"  controller   {controller.get('piiController', '?')} <{controller.get('email', '?')}>, "
        f"jurisdiction {payload.get('jurisdiction', '?')}",
        f"  policy       {payload.get('policyUrl', '?')}",
    ]
    if "tillit:ledgerHash" in payload:
        lines.append(f"  ledger hash  {payload['tillit:ledgerHash']}")
    return lines


def verify_receipt_file(path: Path, jwks: Path | str) -> int:
    """Verify the receipt in ``path`` against ``jwks``; print a summary (0) or the reason it fails (1)."""
    try:
        token = read_receipt_token(path)
    except (OSError, UnicodeError, ReceiptError) as exc:
        print(f"cannot read the receipt from {path}: {exc}", file=sys.stderr)
        return 1
    try:
        keys = load_jwks(jwks)
    except (OSError, httpx.HTTPError, ValueError, JoseError) as exc:
        print(f"cannot load the key set from {jwks}: {exc}", file=sys.stderr)
        return 1
    try:
        payload = verify_receipt(token, keys)
        kid = str(receipt_header(token).get("kid"))
    except ReceiptError as exc:
        print(f"receipt NOT verified: {exc}", file=sys.stderr)
        return 1
    print("\n".join(_summary(payload, kid)))
    return 0


def add_receipt_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receipt verify FILE [--jwks PATH_OR_URL]`` to the ``tillit`` command's sub-commands."""
    receipt = subparsers.add_parser("receipt", help="signed consent receipts")
    actions = receipt.add_subparsers(dest="action", required=True)
    verify = actions.add_parser("verify", help="verify a signed consent receipt offline")
    verify.add_argument("file", type=Path, help="file with the compact JWS or {\"receipt\": ...}; '-' for stdin")
    verify.add_argument(
        "--jwks",
        default=None,
        metavar="PATH_OR_URL",
        help="JWKS file or http(s) URL (default: the consent service's published receipt key)",
    )


def run_receipt_command(args: argparse.Namespace) -> int:
    """Run the ``receipt`` sub-command parsed by :func:`add_receipt_commands`."""
    if args.action == "verify":
        return verify_receipt_file(args.file, args.jwks or default_jwks_path())
    print(f"unknown receipt action {args.action!r}", file=sys.stderr)
    return 2
