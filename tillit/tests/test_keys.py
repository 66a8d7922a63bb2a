"""Signing keys: each name has one key type; private halves are owner-only, public halves hold no secrets."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, OKPKey

from tillit.keys import (
    ACCESS_TOKEN_KEY,
    KEY_NAMES,
    RECEIPT_KEY,
    SERVICE_TOKEN_KEY,
    ensure_signing_key,
    key_algorithm,
    load_private_key,
    load_public_keys,
    load_receipt_key,
    public_keys_path,
)


def test_the_receipt_key_is_ed25519_with_an_owner_only_private_file(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path, RECEIPT_KEY)
    private_file = tmp_path / f"{RECEIPT_KEY}.private.jwk.json"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    key = load_receipt_key(tmp_path)
    assert isinstance(key, OKPKey)
    assert key.curve_name == "Ed25519"
    assert key.is_private
    assert key.kid is not None
    assert key.kid.startswith(f"{RECEIPT_KEY}-")

    published = json.loads(public_keys_path(tmp_path, RECEIPT_KEY).read_text())
    assert len(published["keys"]) == 1
    public = published["keys"][0]
    assert "d" not in public
    assert public | {"x": "..."} == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": "...",
        "kid": key.kid,
        "use": "sig",
        "alg": "Ed25519",
    }
    assert [item.kid for item in load_public_keys(tmp_path, RECEIPT_KEY)] == [key.kid]


@pytest.mark.parametrize("name", [SERVICE_TOKEN_KEY, ACCESS_TOKEN_KEY])
def test_the_token_keys_stay_es256(tmp_path: Path, name: str) -> None:
    ensure_signing_key(tmp_path, name)
    key = load_private_key(tmp_path, name)
    assert isinstance(key, ECKey)
    assert key.curve_name == "P-256"
    assert key_algorithm(name) == "ES256"
    public = json.loads(public_keys_path(tmp_path, name).read_text())["keys"][0]
    assert public["alg"] == "ES256"
    assert "d" not in public


def test_existing_keys_are_kept(tmp_path: Path) -> None:
    for name in KEY_NAMES:
        ensure_signing_key(tmp_path, name)
    before = {path.name: path.read_text() for path in tmp_path.iterdir()}
    for name in KEY_NAMES:
        ensure_signing_key(tmp_path, name)
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == before
    assert len(before) == 2 * len(KEY_NAMES)


def test_loading_a_key_as_the_wrong_type_says_so(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path, RECEIPT_KEY)
    with pytest.raises(RuntimeError, match="kty='OKP' crv='Ed25519'; expected kty='EC' crv='P-256'"):
        load_private_key(tmp_path, RECEIPT_KEY)


def test_a_missing_key_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="run `tillit keys init`"):
        load_receipt_key(tmp_path)
    with pytest.raises(RuntimeError, match="run `tillit keys init`"):
        load_public_keys(tmp_path, RECEIPT_KEY)
