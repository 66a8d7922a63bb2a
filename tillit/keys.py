"""Signing keys kept as JWK files (in Kubernetes they are mounted from Secrets).

``tillit up`` creates missing keys under the data directory's ``keys/``; every process that only
verifies reads the public half.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from joserfc.jwk import ECKey, KeySet

__all__ = [
    "ACCESS_TOKEN_KEY",
    "SERVICE_TOKEN_KEY",
    "SIGNING_ALGORITHM",
    "ensure_signing_key",
    "load_private_key",
    "load_public_keys",
]

SIGNING_ALGORITHM = "ES256"
SERVICE_TOKEN_KEY = "service-token"
ACCESS_TOKEN_KEY = "access-token"


def _private_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.private.jwk.json"


def _public_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.public.jwks.json"


def ensure_signing_key(keys_dir: Path, name: str) -> None:
    """Create the named key pair if it does not exist yet (private file readable by owner only)."""
    private_path = _private_path(keys_dir, name)
    if private_path.exists():
        return
    keys_dir.mkdir(parents=True, exist_ok=True)
    key = ECKey.generate_key(
        "P-256", parameters={"kid": f"{name}-{secrets.token_hex(4)}", "use": "sig", "alg": SIGNING_ALGORITHM}
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(key.as_dict(private=True), handle)
    _public_path(keys_dir, name).write_text(json.dumps({"keys": [key.as_dict(private=False)]}))


def load_private_key(keys_dir: Path, name: str) -> ECKey:
    path = _private_path(keys_dir, name)
    try:
        return ECKey.import_key(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise RuntimeError(f"signing key {path} is missing; run `tillit keys init`") from exc


def load_public_keys(keys_dir: Path, name: str) -> KeySet:
    path = _public_path(keys_dir, name)
    try:
        return KeySet.import_key_set(json.loads(path.read_text()))
    except FileNotFoundError as exc:
        raise RuntimeError(f"public key set {path} is missing; run `tillit keys init`") from exc
