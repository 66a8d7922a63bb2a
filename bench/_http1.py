"""A minimal HTTP/1.1 keep-alive client for the load generator: asyncio protocol + httptools parser.

Why not httpx: on the small shared machines the benchmarks run on, an ``httpx.AsyncClient`` request
costs the load generator about 2.4 ms of CPU (measured against a trivial granian endpoint), so one
client core tops out near 400 requests/s, below what a bare endpoint serves; the benchmark would
measure the client. This client does only what a closed-loop benchmark needs, for about a tenth of
that: plain ``http://`` only, one request at a time per connection, ``Content-Length`` bodies out,
whatever framing httptools parses in. Answers come back as ``httpx.Response`` objects so that the
benchmarks' checks work with either client, and transport failures raise ``httpx`` transport errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Self, cast
from urllib.parse import urlsplit

import httptools
import httpx

__all__ = ["HTTP1Client"]

_Address = tuple[str, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers the request in flight through ``waiter``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes, bool]] | None = None
        self.closed = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"unparsable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.ReadError(f"connection closed by the server{f': {exc}' if exc else ''}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            status = self.parser.get_status_code()
            waiter.set_result((status, self._headers, b"".join(self._body), self.parser.should_keep_alive()))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HTTP1Client:
    """Holds at most ``max_connections`` keep-alive connections (per client, all hosts together).

    ``request`` has the shape of ``httpx.AsyncClient.request`` as far as the load generator uses it.
    """

    def __init__(self, max_connections: int, timeout: float = 30.0) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._timeout = timeout
        self._idle: dict[_Address, list[_Connection]] = {}
        self._split: dict[str, tuple[_Address, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _address(self, url: str) -> tuple[_Address, str]:
        known = self._split.get(url)
        if known is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ValueError(f"only plain http:// URLs are supported, not {url!r}")
            target = parts.path or "/"
            if parts.query:
                target = f"{target}?{parts.query}"
            known = ((parts.hostname, parts.port or 80), target)
            self._split[url] = known
        return known

    async def _connect(self, address: _Address) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, address[0], address[1]), self._timeout
            )
        except (OSError, TimeoutError) as exc:
            raise httpx.ConnectError(f"cannot connect to {address[0]}:{address[1]}: {exc!r}") from exc
        return connection

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        address, target = self._address(url)
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {address[0]}:{address[1]}\r\n"]
        if headers:
            lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        if content is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(content or b'')}\r\n")
        lines.append("\r\n")
        payload = "".join(lines).encode("latin-1") + (content or b"")
        async with self._slots:
            idle = self._idle.setdefault(address, [])
            connection = idle.pop() if idle else None
            if connection is None or connection.closed:
                connection = await self._connect(address)
            answer = await self._exchange(connection, payload)
            status, raw_headers, body, keep_alive = answer
            if keep_alive and not connection.closed:
                idle.append(connection)
            else:
                connection.close()
        return httpx.Response(status, headers=raw_headers, content=body)

    async def _exchange(
        self, connection: _Connection, payload: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        connection.waiter = waiter
        assert connection.transport is not None
        connection.transport.write(payload)
        timer = loop.call_later(self._timeout, _expire, connection, waiter, self._timeout)
        try:
            return await waiter
        except BaseException:
            connection.close()
            raise
        finally:
            timer.cancel()


def _expire(connection: _Connection, waiter: asyncio.Future[Any], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no complete answer within {timeout:g} s"))
    connection.close()
