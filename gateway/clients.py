"""Channel clients: creation with hashed secrets, and the authlib client model."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Final

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.oauth2.rfc6749 import ClientMixin

from gateway.models import ChannelClient
from gateway.repository import ClientRepository
from tillit.policy import Policy
from tillit.problems import Conflict, NotFound, Unprocessable
from tillit.types import as_utc, utcnow

__all__ = ["SCOPES", "ClientInfo", "ClientService", "IssuedCredentials", "OAuthClient"]

SCOPES: Final = (
    "profiles:read",
    "audiences:read",
    "consents:write",
    "decisions:read",
    "dsr:manage",
    "audit:read",
    "webhooks:manage",
)
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""OWASP's argon2id setting (19 MiB, two passes). argon2-cffi's default takes 64 MiB per hash: every token
request raised the gateway's peak memory by 64 MB, and concurrent ones (each in its own worker thread)
by 64 MB each. Client secrets are 256 random bits, not passwords a person chose, so the memory-hard
margin above OWASP's buys nothing. Hashes made with other settings still verify: argon2 keeps them in
the hash."""


class IssuedCredentials(msgspec.Struct):
    """Shown once, when the client is created; only the hash of the secret is stored."""

    client_id: str
    client_secret: str
    channel: str
    scopes: list[str]


class ClientInfo(msgspec.Struct):
    """A client as ``tillit clients list`` shows it; never the secret or its hash."""

    client_id: str
    channel: str
    scopes: list[str]
    created_at: datetime
    disabled: bool
    disabled_at: datetime | None
    secret_rotated_at: datetime | None

    @classmethod
    def of(cls, row: ChannelClient) -> ClientInfo:
        return cls(
            client_id=row.client_id,
            channel=row.channel,
            scopes=row.scopes.split(),
            created_at=as_utc(row.created_at),
            disabled=row.disabled,
            disabled_at=as_utc(row.disabled_at) if row.disabled_at else None,
            secret_rotated_at=as_utc(row.secret_rotated_at) if row.secret_rotated_at else None,
        )


class OAuthClient(ClientMixin):
    """What authlib needs to know of a stored client. Only ``client_credentials`` is allowed."""

    def __init__(self, row: ChannelClient) -> None:
        self.row = row
        self.scopes = row.scopes.split()

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return " ".join(self.scopes)
        return " ".join(s for s in scope.split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        try:
            return _hasher.verify(self.row.secret_hash, client_secret)
        except (VerificationError, InvalidHashError):
            return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials" and not self.row.disabled


class ClientService:
    def __init__(self, repository: ClientRepository, policy: Policy, clock: Callable[[], datetime] = utcnow) -> None:
        self.repository = repository
        self.policy = policy
        self.clock = clock

    async def create(
        self, channel: str, scopes: list[str], client_id: str | None = None, client_secret: str | None = None
    ) -> IssuedCredentials:
        if channel not in self.policy.channels:
            raise Unprocessable(f"channel {channel!r} is not declared in the policy", slug="unknown-channel")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:
            raise Unprocessable(f"unknown scopes: {', '.join(unknown)}", slug="unknown-scope")
        client_id = client_id or f"{channel}-{secrets.token_hex(6)}"
        if await self.repository.get(client_id) is not None:
            raise Conflict(f"client {client_id!r} already exists", slug="client-exists")
        client_secret = client_secret or secrets.token_urlsafe(32)
        await self.repository.add(
            ChannelClient(
                client_id=client_id,
                secret_hash=_hasher.hash(client_secret),
                channel=channel,
                scopes=" ".join(scopes),
                created_at=self.clock(),
            )
        )
        return IssuedCredentials(client_id=client_id, client_secret=client_secret, channel=channel, scopes=scopes)

    async def list(self) -> list[ClientInfo]:
        return [ClientInfo.of(row) for row in await self.repository.all()]

    async def _get(self, client_id: str) -> ChannelClient:
        row = await self.repository.get(client_id)
        if row is None:
            raise NotFound(f"no client {client_id!r}", slug="client-not-found")
        return row

    async def rotate_secret(self, client_id: str) -> IssuedCredentials:
        """A new secret, shown once; the old one stops working for the next token request.

        Tokens already issued under the old secret stay valid until they expire (at most the access
        token lifetime); to cut those off too, disable the client.
        """
        row = await self._get(client_id)
        client_secret = secrets.token_urlsafe(32)
        row.secret_hash = _hasher.hash(client_secret)
        row.secret_rotated_at = self.clock()
        await self.repository.save(row)
        return IssuedCredentials(
            client_id=row.client_id, client_secret=client_secret, channel=row.channel, scopes=row.scopes.split()
        )

    async def set_disabled(self, client_id: str, disabled: bool) -> ClientInfo:
        """Disable (no new tokens; issued ones refused too, see ``gateway.revocation``) or enable again."""
        row = await self._get(client_id)
        if row.disabled != disabled:
            row.disabled = disabled
            row.disabled_at = self.clock() if disabled else None
            await self.repository.save(row)
        return ClientInfo.of(row)
