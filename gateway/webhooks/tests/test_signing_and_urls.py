"""Webhook signatures, the retry schedule, and which URLs may receive webhooks."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.webhooks.service import check_webhook_url
from gateway.webhooks.signing import backoff_delay, new_secret, sign, signature_header
from tillit.problems import Unprocessable


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":"d1","type":"consent.withdrawn"}'
    expected = hmac.new(b"whsec_test", b"1767225600." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_test", 1767225600, body) == expected
    assert signature_header("whsec_test", 1767225600, body) == f"t=1767225600,v1={expected}"
    assert sign("whsec_other", 1767225600, body) != expected
    assert sign("whsec_test", 1767225601, body) != expected


def test_secrets_are_long_random_and_say_what_they_are() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(secret.startswith("whsec_") and len(secret) >= 48 for secret in secrets)


def test_backoff_doubles_up_to_the_cap_with_jitter_between_half_and_whole_step() -> None:
    lowest = [backoff_delay(n, base=30, cap=3600, jitter=lambda: 0.0) for n in range(1, 10)]
    highest = [backoff_delay(n, base=30, cap=3600, jitter=lambda: 1.0) for n in range(1, 10)]
    assert highest == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert lowest == [step / 2 for step in highest]
    assert 15 <= backoff_delay(1, base=30, cap=3600) <= 30
    assert backoff_delay(10_000, base=30, cap=3600, jitter=lambda: 1.0) == 3600


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.shop.example/tillit",
        "https://hooks.shop.example:8443/tillit?channel=email",
        "https://93.184.215.14/hook",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook",
        "https://xn--bcher-kva.example/hook",
    ],
)
def test_https_to_a_public_host_is_accepted(url: str) -> None:
    assert check_webhook_url(url, allow_insecure_loopback=False) == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://hooks.shop.example/tillit", "must use https"),
        ("ftp://hooks.shop.example/tillit", "must use https"),
        ("hooks.shop.example/tillit", "must use https"),
        ("javascript:alert(1)", "must use https"),
        ("https://", "names no host"),
        ("https://user:pw@hooks.shop.example/", "credentials"),
        ("https://hooks.shop.example/#frag", "fragment"),
        ("https://hooks.shop.example:99999/", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
        ("https://hooks.shop.example/a b", "spaces or control"),
        ("https://127.0.0.1/hook", "private, loopback or reserved"),
        ("https://10.0.0.5/hook", "private, loopback or reserved"),
        ("https://169.254.169.254/latest/meta-data", "private, loopback or reserved"),
        ("https://[::ffff:127.0.0.1]/hook", "private, loopback or reserved"),
        ("https://localhost/hook", "public host"),
        ("https://consent/v1/changes", "public host"),
        ("https://consent.tillit.svc.cluster.local/", "public host"),
        ("https://printer.local/", "public host"),
        ("https://2130706433/", "public host"),
        ("https://bücher.example/", "public host"),
        ("http://127.0.0.1:8080/hook", "must use https"),
    ],
)
def test_anything_else_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(Unprocessable, match=problem) as refused:
        check_webhook_url(url, allow_insecure_loopback=False)
    assert refused.value.slug == "invalid-webhook-url"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://localhost:9000/", "https://[::1]:8443/hook", "http://127.1.2.3/"]
)
def test_loopback_over_http_only_where_the_gateway_allows_it(url: str) -> None:
    assert check_webhook_url(url, allow_insecure_loopback=True) == url
    with pytest.raises(Unprocessable):
        check_webhook_url(url, allow_insecure_loopback=False)


def test_allowing_loopback_opens_nothing_else() -> None:
    for url in ("http://hooks.shop.example/", "http://10.0.0.5/", "https://192.168.1.2/"):
        with pytest.raises(Unprocessable):
            check_webhook_url(url, allow_insecure_loopback=True)
