"""Unsubscribe and preference links: each verifies only as itself, unaltered, with the right key."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc.jwk import ECKey, KeySet

from tillit.links import (
    LinkError,
    sign_preference_link,
    sign_unsubscribe,
    verify_preference_link,
    verify_unsubscribe,
)

ISSUER = "https://gateway.example"
KEY = ECKey.generate_key("P-256", parameters={"kid": "link-test", "alg": "ES256"})
KEYS = KeySet([KEY])
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
PURPOSE = "marketing.communications.email"


def unsubscribe_token(key: ECKey = KEY, issuer: str = ISSUER) -> str:
    return sign_unsubscribe(key, issuer=issuer, subject_id="astrid", purpose=PURPOSE, client_id="email-1", now=NOW)


def preference_token(now: datetime = NOW) -> str:
    token, _ = sign_preference_link(
        KEY, issuer=ISSUER, subject_id="astrid", client_id="email-1", now=now, lifetime=timedelta(days=7)
    )
    return token


def test_an_unsubscribe_link_names_its_subject_and_purpose_and_never_expires() -> None:
    link = verify_unsubscribe(unsubscribe_token(), KEYS, issuer=ISSUER)
    assert (link.subject_id, link.purpose, link.client_id, link.issued_at) == ("astrid", PURPOSE, "email-1", NOW)


def test_a_preference_link_expires_and_has_an_id() -> None:
    token, expires_at = sign_preference_link(
        KEY, issuer=ISSUER, subject_id="astrid", client_id="email-1", now=NOW, lifetime=timedelta(days=7)
    )
    link = verify_preference_link(token, KEYS, issuer=ISSUER, now=NOW + timedelta(days=6))
    assert (link.subject_id, link.expires_at) == ("astrid", NOW + timedelta(days=7)) == ("astrid", expires_at)
    another = verify_preference_link(preference_token(), KEYS, issuer=ISSUER, now=NOW)
    assert link.link_id
    assert link.link_id != another.link_id
    with pytest.raises(LinkError) as expired:
        verify_preference_link(token, KEYS, issuer=ISSUER, now=NOW + timedelta(days=7, minutes=1))
    assert expired.value.expired


def test_one_kind_of_link_never_passes_for_the_other() -> None:
    with pytest.raises(LinkError, match="not a preference link"):
        verify_preference_link(unsubscribe_token(), KEYS, issuer=ISSUER, now=NOW)
    with pytest.raises(LinkError, match="not an unsubscribe link"):
        verify_unsubscribe(preference_token(), KEYS, issuer=ISSUER)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x" * 5000,
        "not-a-token",
        "a.b.c",
        unsubscribe_token()[:-4] + ("AAAA" if not unsubscribe_token().endswith("AAAA") else "BBBB"),
        unsubscribe_token(key=ECKey.generate_key("P-256", parameters={"kid": "link-test"})),
        unsubscribe_token(issuer="https://someone-else.example"),
    ],
    ids=["empty", "too-long", "garbage", "three-parts", "tampered", "other-key", "other-issuer"],
)
def test_anything_not_signed_by_the_link_key_as_an_unsubscribe_link_is_refused(token: str) -> None:
    with pytest.raises(LinkError):
        verify_unsubscribe(token, KEYS, issuer=ISSUER)


def test_a_tampered_claim_breaks_the_signature() -> None:
    header, payload, signature = unsubscribe_token().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "lars"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(LinkError):
        verify_unsubscribe(f"{header}.{forged}.{signature}", KEYS, issuer=ISSUER)
