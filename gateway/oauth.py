"""OAuth2 client credentials (RFC 6749 §4.4) on Litestar with authlib; JWT access tokens (RFC 9068).

authlib is synchronous and argon2 verification is deliberately slow, so a token request runs in a
worker thread; looking up the client hops back to the event loop for the async database.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import anyio.from_thread
import anyio.to_thread
import msgspec
from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from litestar import Request, Response

from gateway.clients import SCOPES, OAuthClient
from gateway.models import ChannelClient
from gateway.revocation import DisabledClients
from tillit.db import Database
from tillit.keys import SIGNING_ALGORITHM
from tillit.problems import Forbidden, Unauthorized

__all__ = ["ACCESS_TOKEN_AUDIENCE", "MAX_TOKEN_LENGTH", "Caller", "TokenService"]

ACCESS_TOKEN_AUDIENCE = "tillit-gateway"  # noqa: S105 - an audience name, not a secret
_VERIFIED_CACHE_SIZE = 1024
MAX_TOKEN_LENGTH = 4096
"""Issued tokens are well under 1 KB; anything longer is refused before it is parsed."""


class Caller(msgspec.Struct, frozen=True):
    """The channel client behind a verified access token."""

    client_id: str
    channel: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope", slug="insufficient-scope")


class _FormPayload(OAuth2Payload):
    def __init__(self, form: dict[str, str]) -> None:
        self._form = form

    @property
    def data(self) -> dict[str, str]:
        return self._form

    @property
    def datalist(self) -> dict[str, list[str]]:
        return {key: [value] for key, value in self._form.items()}


class _LitestarOAuth2Request(OAuth2Request):
    def __init__(self, method: str, uri: str, headers: Any, form: dict[str, str]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.payload = _FormPayload(form)
        self._form = form

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _ClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def validate_token_request(self) -> None:
        """Refuse scopes the client was not granted instead of silently issuing a narrower token."""
        super().validate_token_request()
        requested = (self.request.payload.scope or "").split()
        missing = sorted(set(requested) - set(self.request.client.scopes))
        if missing:
            raise InvalidScopeError(description=f"this client may not ask for: {' '.join(missing)}")


class _AccessTokenGenerator(JWTBearerTokenGenerator):
    def __init__(self, key: ECKey, issuer: str, ttl: int) -> None:
        super().__init__(issuer=issuer, alg=SIGNING_ALGORITHM, expires_generator=lambda _client, _grant: ttl)
        self._keys = KeySet([key])

    def get_jwks(self) -> KeySet:
        return self._keys

    def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
        return ACCESS_TOKEN_AUDIENCE

    def get_jti(self, client: Any, grant_type: Any, user: Any, scope: Any) -> str:
        return secrets.token_urlsafe(16)

    def get_extra_claims(self, client: OAuthClient, grant_type: Any, user: Any, scope: Any) -> dict[str, Any]:
        return {"channel": client.row.channel}


class _Server(AuthorizationServer):
    def __init__(self, database: Database, generator: _AccessTokenGenerator) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self._database = database
        self.register_grant(_ClientCredentials)
        self.register_token_generator("default", generator)

    async def _load(self, client_id: str) -> ChannelClient | None:
        async with self._database.sessionmaker() as session:
            return await session.get(ChannelClient, client_id)

    def query_client(self, client_id: str) -> OAuthClient | None:
        if not client_id or len(client_id) > 64:
            return None
        row = anyio.from_thread.run(self._load, client_id)
        return OAuthClient(row) if row is not None else None

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """JWT access tokens are self-contained; nothing to store."""

    def handle_response(self, status: int, body: Any, headers: Any) -> Response[Any]:
        headers = dict(headers)
        if isinstance(body, dict) and body.get("error") == "invalid_client":
            # RFC 6749 §5.2 allows 401 for every failed client authentication; one answer for
            # Basic and post keeps client libraries' retry logic simple.
            status = 401
            headers.setdefault("WWW-Authenticate", 'Basic realm="tillit"')
        return Response(content=body, status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No listeners."""


class TokenService:
    """Issues access tokens at ``/oauth/token`` and verifies them on every API call."""

    def __init__(
        self,
        database: Database,
        signing_key: ECKey,
        public_keys: KeySet,
        issuer: str,
        ttl: int,
        disabled: DisabledClients | None = None,
    ) -> None:
        self._server = _Server(database, _AccessTokenGenerator(signing_key, issuer, ttl))
        self._public_keys = public_keys
        self._disabled = disabled
        self._claims = jwt.JWTClaimsRegistry(
            leeway=5,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": ACCESS_TOKEN_AUDIENCE},
            exp={"essential": True},
            client_id={"essential": True},
            channel={"essential": True},
        )
        self._verified: dict[str, tuple[float, Caller]] = {}

    async def token_response(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = {key: str(value) for key, value in (await request.form()).items()}
        # TLS ends in front of the gateway (ingress or a local loopback), so the request authlib
        # checks for transport security is the one the client made over https.
        uri = "https://" + str(request.url).split("://", 1)[1]
        oauth_request = _LitestarOAuth2Request(request.method, uri, request.headers, form)
        return await anyio.to_thread.run_sync(self._server.create_token_response, oauth_request)

    def verify(self, authorization: str | None) -> Caller:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("an access token is required: Authorization: Bearer <token from /oauth/token>")
        raw = authorization[7:].strip()
        if len(raw) > MAX_TOKEN_LENGTH:
            raise Unauthorized(f"the access token is longer than any issued here ({MAX_TOKEN_LENGTH} characters)")
        cached = self._verified.get(raw)
        if cached is not None and cached[0] > time.time():
            if self._disabled is not None:
                self._disabled.check(cached[1].client_id)
            return cached[1]
        try:
            token = jwt.decode(raw, self._public_keys, algorithms=[SIGNING_ALGORITHM])
            if token.header.get("typ") != "at+jwt":
                raise Unauthorized("the token is not an access token (typ at+jwt)")
            self._claims.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"the access token is not valid: {exc}") from exc
        claims = token.claims
        if self._disabled is not None:
            self._disabled.check(str(claims["client_id"]))
        caller = Caller(
            client_id=str(claims["client_id"]),
            channel=str(claims["channel"]),
            scopes=frozenset(str(claims.get("scope") or "").split()),
        )
        # A channel sends the same token for its whole lifetime; the signature check (ES256, ~9 % of
        # the gateway's CPU per release) is done once per token, and the token counts until it expires.
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[raw] = (float(claims["exp"]), caller)
        return caller
