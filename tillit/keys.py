"""Signing keys kept as JWK files (in Kubernetes they are mounted from Secrets).

``tillit up`` creates missing keys under the data directory's ``keys/``; every process that only
verifies reads the public half. Each key name has one algorithm: the token keys and the link key
(unsubscribe and preference links, see :mod:`tillit.links`) sign ES256, the
consent-receipt key signs Ed25519 (RFC 9864) (small signatures that shoppers and auditors can check
offline with any JOSE library).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from joserfc.jwk import ECKey, KeySet, OKPKey

__all__ = [
    "ACCESS_TOKEN_KEY",
    "KEY_NAMES",
    "LINK_KEY",
    "RECEIPT_ALGORITHM",
    "RECEIPT_KEY",
    "SERVICE_TOKEN_KEY",
    "SIGNING_ALGORITHM",
    "ensure_signing_key",
    "key_algorithm",
    "load_private_key",
    "load_public_keys",
    "load_receipt_key",
    "public_keys_path",
    "rotate_signing_key",
]

SIGNING_ALGORITHM: Final = "ES256"
RECEIPT_ALGORITHM: Final = "Ed25519"
SERVICE_TOKEN_KEY: Final = "service-token"
ACCESS_TOKEN_KEY: Final = "access-token"
RECEIPT_KEY: Final = "consent-receipt"
LINK_KEY: Final = "link"
KEY_NAMES: Final = (SERVICE_TOKEN_KEY, ACCESS_TOKEN_KEY, RECEIPT_KEY, LINK_KEY)

_ALGORITHMS: Final[dict[str, str]] = {RECEIPT_KEY: RECEIPT_ALGORITHM}
_KeyT = TypeVar("_KeyT", ECKey, OKPKey)


def key_algorithm(name: str) -> str:
    """The JWS algorithm the key ``name`` signs with (ES256 unless the name says otherwise)."""
    return _ALGORITHMS.get(name, SIGNING_ALGORITHM)


def _private_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.private.jwk.json"


def public_keys_path(keys_dir: Path, name: str) -> Path:
    """Where the public JWKS of key ``name`` is published."""
    return keys_dir / f"{name}.public.jwks.json"


def _generate(name: str) -> ECKey | OKPKey:
    algorithm = key_algorithm(name)
    parameters: dict[str, Any] = {"kid": f"{name}-{secrets.token_hex(4)}", "use": "sig", "alg": algorithm}
    if algorithm == RECEIPT_ALGORITHM:
        return OKPKey.generate_key("Ed25519", parameters=parameters)
    return ECKey.generate_key("P-256", parameters=parameters)


def ensure_signing_key(keys_dir: Path, name: str) -> None:
    """Create the named key pair if it does not exist yet (private file readable by owner only)."""
    private_path = _private_path(keys_dir, name)
    if private_path.exists():
        return
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = _generate(name)
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(key.as_dict(private=True), handle)
    public_keys_path(keys_dir, name).write_text(json.dumps({"keys": [key.as_dict(private=False)]}))


def _load_private(keys_dir: Path, name: str, key_type: type[_KeyT], curve: str) -> _KeyT:
    path = _private_path(keys_dir, name)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RuntimeError(f"signing key {path} is missing; run `tillit keys init`") from exc
    if data.get("kty") != key_type.key_type or data.get("crv") != curve:
        raise RuntimeError(
            f"signing key {path} is kty={data.get('kty')!r} crv={data.get('crv')!r}; "
            f"expected kty={key_type.key_type!r} crv={curve!r}"
        )
    return key_type.import_key(data)


def load_private_key(keys_dir: Path, name: str) -> ECKey:
    """The private ES256 key ``name`` (the token keys); the receipt key has :func:`load_receipt_key`."""
    return _load_private(keys_dir, name, ECKey, "P-256")


def load_receipt_key(keys_dir: Path) -> OKPKey:
    """The private Ed25519 key that signs consent receipts."""
    return _load_private(keys_dir, RECEIPT_KEY, OKPKey, "Ed25519")


def load_public_keys(keys_dir: Path, name: str) -> KeySet:
    path = public_keys_path(keys_dir, name)
    try:
        return KeySet.import_key_set(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise RuntimeError(f"public key set {path} is missing; run `tillit keys init`") from exc


def _write_atomically(path: Path, content: str, mode: int) -> None:
    """Replace ``path`` in one step: a reader sees the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _retired_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.retired.json"


def rotate_signing_key(
    keys_dir: Path,
    name: str,
    *,
    retain: timedelta | None,
    revoke_previous: bool = False,
    now: datetime | None = None,
) -> tuple[str, list[str], list[str]]:
    """Make a new private key the signing key of ``name``; keep earlier public keys while they matter.

    The published set (``<name>.public.jwks.json``, newest first) keeps each earlier public key until
    ``retain`` has passed since it stopped signing, so what it signed (access tokens: for their
    lifetime) still verifies; ``retain=None`` keeps them for good (consent receipts are checked for
    years). Older ones are pruned at this rotation. ``revoke_previous`` drops every earlier key at
    once (the private key leaked): whatever it signed stops verifying as soon as processes reload.
    When each key stopped signing is kept in ``<name>.retired.json``. The public set is written
    before the private key, so a verifier that reloads in between already knows the new key.
    Processes read keys when they start: restart them (all verifiers first) to pick this up.

    Returns the new key id, the key ids still published after it and the key ids pruned.
    """
    now = now or datetime.now(UTC)
    private_path = _private_path(keys_dir, name)
    if not private_path.exists():
        raise RuntimeError(f"signing key {private_path} is missing; run `tillit keys init`")
    previous = json.loads(public_keys_path(keys_dir, name).read_text())["keys"]
    retired_path = _retired_path(keys_dir, name)
    retired: dict[str, str] = json.loads(retired_path.read_text()) if retired_path.exists() else {}
    current_kid = json.loads(private_path.read_text()).get("kid")
    if current_kid:
        retired[current_kid] = now.isoformat()
    kept, pruned = [], []
    for public in previous:
        kid = public.get("kid")
        stopped = datetime.fromisoformat(retired[kid]) if kid in retired else now
        if revoke_previous or (retain is not None and stopped + retain <= now):
            pruned.append(kid)
        else:
            kept.append(public)
    key = _generate(name)
    published = [key.as_dict(private=False), *kept]
    kept_kids = {public.get("kid") for public in kept}
    _write_atomically(public_keys_path(keys_dir, name), json.dumps({"keys": published}), 0o644)
    _write_atomically(private_path, json.dumps(key.as_dict(private=True)), 0o600)
    _write_atomically(retired_path, json.dumps({kid: at for kid, at in retired.items() if kid in kept_kids}), 0o644)
    return str(key.kid), [str(public.get("kid")) for public in published], [str(kid) for kid in pruned]
