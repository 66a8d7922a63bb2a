"""Rotating a signing key: the new key signs, earlier public keys stay published as long as needed."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tillit.keys import (
    ACCESS_TOKEN_KEY,
    RECEIPT_KEY,
    ensure_signing_key,
    load_private_key,
    load_public_keys,
    load_receipt_key,
    public_keys_path,
    rotate_signing_key,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_receipt_keys_are_kept_for_good_and_files_stay_private(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path, RECEIPT_KEY)
    first = load_receipt_key(tmp_path).kid
    kids = [first]
    for years in range(1, 4):
        kid, published, pruned = rotate_signing_key(
            tmp_path, RECEIPT_KEY, retain=None, now=T0 + timedelta(days=365 * years)
        )
        kids.insert(0, kid)
        assert (published, pruned) == (kids, [])
    assert load_receipt_key(tmp_path).kid == kids[0]
    assert [key.kid for key in load_public_keys(tmp_path, RECEIPT_KEY)] == kids
    private_file = tmp_path / f"{RECEIPT_KEY}.private.jwk.json"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert all("d" not in key for key in json.loads(public_keys_path(tmp_path, RECEIPT_KEY).read_text())["keys"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_token_keys_are_pruned_once_retired_longer_than_tokens_live(tmp_path: Path) -> None:
    ensure_signing_key(tmp_path, ACCESS_TOKEN_KEY)
    first = load_private_key(tmp_path, ACCESS_TOKEN_KEY).kid
    retain = timedelta(minutes=6)
    second, published, _ = rotate_signing_key(tmp_path, ACCESS_TOKEN_KEY, retain=retain, now=T0)
    assert published == [second, first]
    third, published, pruned = rotate_signing_key(
        tmp_path, ACCESS_TOKEN_KEY, retain=retain, now=T0 + retain - timedelta(seconds=1)
    )
    assert (published, pruned) == ([third, second, first], [])
    fourth, published, pruned = rotate_signing_key(tmp_path, ACCESS_TOKEN_KEY, retain=retain, now=T0 + retain)
    assert (published, pruned) == ([fourth, third, second], [first])
    retired = json.loads((tmp_path / f"{ACCESS_TOKEN_KEY}.retired.json").read_text())
    assert set(retired) == {third, second}


def test_rotating_a_key_that_does_not_exist_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="run `tillit keys init`"):
        rotate_signing_key(tmp_path, ACCESS_TOKEN_KEY, retain=None)
