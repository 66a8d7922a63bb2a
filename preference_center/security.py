"""The shopper's session cookie, and the headers every page is served with.

The preference center keeps nothing about a shopper on the server: the session *is* the cookie. It
holds the gateway-issued shopper token and the page language, sealed with AES-256-GCM under a key
of the preference center's own (``TILLIT_KEYS_DIR/preference-center-session.key``, created on first
start; in a cluster mount the same key into every replica). A cookie that was altered, made under
another key or has outlived the token does not open.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from pathlib import Path
from typing import Any, Final

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from litestar import Request
from litestar.datastructures import Cookie
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from preference_center.gateway_client import gateway_wait_ms, record_gateway_waits

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SESSION_COOKIE",
    "SecurityHeadersMiddleware",
    "Session",
    "SessionSealer",
    "is_secure",
    "load_session_key",
]

SESSION_COOKIE: Final = "tillit_pc"
SESSION_KEY_FILE: Final = "preference-center-session.key"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_AAD: Final = b"tillit-preference-center-session-v1"
_MAX_COOKIE: Final = 4000


class Session(msgspec.Struct, frozen=True):
    """What the cookie holds: the shopper token, when it runs out (Unix seconds), the page language."""

    token: str
    expires: int
    lang: str

    def with_lang(self, lang: str) -> Session:
        return Session(token=self.token, expires=self.expires, lang=lang)


def load_session_key(keys_dir: Path) -> bytes:
    """The 32-byte sealing key, from ``TILLIT_PREFERENCE_CENTER_SESSION_KEY`` (base64) or its key file."""
    from_env = os.environ.get("TILLIT_PREFERENCE_CENTER_SESSION_KEY")
    if from_env:
        key = base64.urlsafe_b64decode(from_env.encode() + b"=" * (-len(from_env) % 4))
    else:
        path = keys_dir / SESSION_KEY_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(base64.urlsafe_b64encode(secrets.token_bytes(32)))
        key = base64.urlsafe_b64decode(path.read_bytes().strip())
    if len(key) != 32:
        raise ValueError("the preference center's session key must be 32 bytes (base64)")
    return key


class SessionSealer:
    """Seals a :class:`Session` into a cookie value and opens it again (``None``: not ours, or expired)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, session: Session) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, msgspec.json.encode(session), _AAD)
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, value: str | None, now: float | None = None) -> Session | None:
        if not value or len(value) > _MAX_COOKIE:
            return None
        try:
            raw = base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4))
            session = msgspec.json.decode(self._aead.decrypt(raw[:12], raw[12:], _AAD), type=Session)
        except Exception:
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def cookie(self, session: Session, *, secure: bool) -> Cookie:
        return Cookie(
            key=SESSION_COOKIE,
            value=self.seal(session),
            max_age=max(0, int(session.expires - time.time())),
            path="/",
            httponly=True,
            secure=secure,
            samesite="lax",
        )

    @staticmethod
    def removal(*, secure: bool) -> Cookie:
        return Cookie(key=SESSION_COOKIE, value="", max_age=0, path="/", httponly=True, secure=secure, samesite="lax")


def is_secure(request: Request[Any, Any, Any]) -> bool:
    """Served over TLS, directly or behind a proxy that says so (it can only add ``Secure``)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


_PAGE_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=(), interest-cohort=()"),
)


class SecurityHeadersMiddleware:
    """CSP and friends on every answer, ``no-store`` on pages (they show personal data), and a
    ``Server-Timing: app;dur=<ms>`` header with the time the request spent in this process."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        waits = record_gateway_waits()
        is_static = scope["path"].startswith("/static/")
        forwarded = dict(scope.get("headers", [])).get(b"x-forwarded-proto", b"").split(b",")[0].strip().lower()
        over_tls = scope.get("scheme") == "https" or forwarded == b"https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if over_tls:  # the CSRF cookie too (Litestar's own flag is fixed at start)
                    headers = [
                        (name, value + b"; Secure")
                        if name.lower() == b"set-cookie" and b"secure" not in value.lower()
                        else (name, value)
                        for name, value in headers
                    ]
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in _PAGE_HEADERS if name not in present)
                if b"referrer-policy" not in present:
                    headers.append((b"referrer-policy", b"same-origin"))
                if not is_static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                elapsed = (time.perf_counter() - started) * 1000
                timing = f"app;dur={elapsed:.1f}, gateway;dur={gateway_wait_ms(waits):.1f}"
                headers.append((b"server-timing", timing.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
