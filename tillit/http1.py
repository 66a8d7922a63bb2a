"""A small HTTP/1.1 keep-alive client: the gateway's calls to the services, the preference center's to the gateway.

Every release asks the consent service for the subject's state and the preferences service for
the profile. Through ``aiohttp`` those two calls were 35-45% of the gateway's CPU per release (py-spy
under ``bench.gateway``: request and header objects, URL parsing, timeout handles, the response
machinery), for two ``GET``s without a body whose answers are decoded by msgspec anyway. This client
does exactly that and no more: a request (``GET``, or another method with a ``Content-Length`` body) on
plain ``http://`` (or ``https://``), one at a time per keep-alive connection, the answer framed by
httptools (``Content-Length`` or chunked). The preference center uses it for every call to the
gateway: there httpx (httpcore's pool through anyio, h11) was half of its CPU per page.

Failures are :class:`UpstreamTransportError` (an ``OSError``) or ``TimeoutError``, which the gateway
turns into a 503 like any other failure to reach a service. A ``GET`` that fails on a reused
connection before any answer arrived (the service closed it while idle) is sent again once on a new
connection: it changes nothing on the service. Other methods are never sent twice.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools

__all__ = ["HTTP1Pool", "UpstreamTransportError"]

_Address = tuple[str, int, bool]
"""Host, port, TLS."""
_IDLE_SECONDS: Final = 30.0
_IDLE_SECONDS_FOR_WRITES: Final = 5.0
"""A request that is never sent twice takes only a connection used recently: less chance that the
service is closing it just then."""


class UpstreamTransportError(OSError):
    """The service could not be reached or did not answer with a readable HTTP/1.1 response."""


class _StaleConnectionError(UpstreamTransportError):
    """A reused connection was closed before any byte of the answer arrived."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; the request in flight is answered through ``waiter``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._started = False
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamTransportError(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = _StaleConnectionError if not self._started else UpstreamTransportError
        self._fail(error(f"connection closed by the service{f': {exc}' if exc else ''}"))

    def on_message_begin(self) -> None:
        self._started = True
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        self._started = False
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self._body), self.parser.should_keep_alive()))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, payload: bytes, waiter: asyncio.Future[tuple[int, bytes, bool]]) -> None:
        self._started = False
        self.waiter = waiter
        assert self.transport is not None
        self.transport.write(payload)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HTTP1Pool:
    """Keep-alive connections to each service, at most ``limit_per_host`` of them in use at once."""

    def __init__(self, limit_per_host: int, timeout: float) -> None:
        self._limit = limit_per_host
        self._timeout = timeout
        self._idle: dict[_Address, list[_Connection]] = {}
        self._slots: dict[_Address, asyncio.Semaphore] = {}
        self._bases: dict[str, tuple[_Address, str, str]] = {}
        self._tls: ssl.SSLContext | None = None

    def _base(self, base_url: str) -> tuple[_Address, str, str]:
        """The address, path prefix and Host header of a service's base URL."""
        known = self._bases.get(base_url)
        if known is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"only http:// and https:// service URLs are supported, not {base_url!r}")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            known = ((parts.hostname, port, tls), parts.path.rstrip("/"), parts.netloc)
            self._bases[base_url] = known
        return known

    async def get(self, base_url: str, path: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """``GET base_url + path``: the status and the whole body; the path must be URL-safe already."""
        return await self.request("GET", base_url, path, headers)

    async def request(
        self, method: str, base_url: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        """``method base_url + path`` with ``body``: the status and the whole answer's body.

        The path must be URL-safe already; a header name or value holding a line break, or a character
        outside Latin-1, is a ``ValueError`` before anything is sent.
        """
        address, prefix, host = self._base(base_url)
        lines = [f"{method} {prefix}{path} HTTP/1.1\r\nHost: {host}\r\n"]
        for name, value in headers.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
                raise ValueError(f"header {name!r} cannot be sent: it holds a line break or a colon in its name")
            lines.append(f"{name}: {value}\r\n")
        if body is not None or method not in ("GET", "HEAD", "DELETE"):
            lines.append(f"Content-Length: {len(body or b'')}\r\n")
        lines.append("\r\n")
        payload = "".join(lines).encode("latin-1")
        if body:
            payload += body
        retry = method in ("GET", "HEAD")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        slots = self._slots.get(address)
        if slots is None:
            slots = self._slots[address] = asyncio.Semaphore(self._limit)
        async with slots:
            connection = self._reuse(address, loop.time(), _IDLE_SECONDS if retry else _IDLE_SECONDS_FOR_WRITES)
            if connection is not None:
                try:
                    return await self._exchange(connection, address, payload, deadline)
                except _StaleConnectionError:
                    if not retry:
                        raise
                    # closed by the service while idle: once more on a new connection
            connection = await self._connect(address, deadline)
            return await self._exchange(connection, address, payload, deadline)

    def _reuse(self, address: _Address, now: float, max_idle: float) -> _Connection | None:
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < max_idle:
                return connection
            connection.close()
        return None

    async def _connect(self, address: _Address, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port, tls = address
        if tls and self._tls is None:
            self._tls = ssl.create_default_context()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, host, port, ssl=self._tls if tls else None),
                max(deadline - loop.time(), 0.001),
            )
        except TimeoutError:
            raise
        except OSError as exc:
            raise UpstreamTransportError(f"cannot connect to {host}:{port}: {exc}") from exc
        return connection

    async def _exchange(
        self, connection: _Connection, address: _Address, payload: bytes, deadline: float
    ) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        connection.send(payload, waiter)
        timer = loop.call_at(deadline, _expire, connection, waiter)
        try:
            status, body, keep_alive = await waiter
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()
        if keep_alive and not connection.closed:
            connection.idle_since = loop.time()
            self._idle.setdefault(address, []).append(connection)
        else:
            connection.close()
        return status, body

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def _expire(connection: _Connection, waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no complete answer in time"))
    connection.close()
