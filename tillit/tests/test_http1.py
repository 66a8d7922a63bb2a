"""The gateway's lean HTTP/1.1 client: framing, keep-alive, stale connections and failures."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tillit.http1 import HTTP1Pool, UpstreamTransportError

pytestmark = pytest.mark.anyio

Handler = Callable[[bytes, asyncio.StreamWriter], None]


def _answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


@asynccontextmanager
async def _server(handle: Handler) -> AsyncIterator[tuple[str, list[bytes], list[int]]]:
    """A tiny server: ``handle(request head, writer)`` answers each request; yields its base URL,
    the request heads received and the number of connections accepted."""
    heads: list[bytes] = []
    connections = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                heads.append(head)
                handle(head, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads, connections
    finally:
        server.close()


async def test_get_sends_headers_and_reuses_the_connection() -> None:
    async with _server(lambda head, writer: writer.write(_answer(b'{"ok":true}'))) as (url, heads, connections):
        pool = HTTP1Pool(4, timeout=2.0)
        for _ in range(3):
            status, body = await pool.get(url, "/v1/subjects/s-1/consents", {"Authorization": "Bearer t"})
            assert (status, body) == (200, b'{"ok":true}')
        await pool.close()
    assert connections[0] == 1
    assert heads[0].startswith(b"GET /v1/subjects/s-1/consents HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t\r\n" in heads[0]
    assert f"\r\nHost: {url.removeprefix('http://')}\r\n".encode() in heads[0]


async def test_chunked_answers_and_error_statuses_come_back_whole() -> None:
    def chunked(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    async with _server(chunked) as (url, _, _):
        pool = HTTP1Pool(4, timeout=2.0)
        assert await pool.get(url, "/x", {}) == (404, b"abcde")
        await pool.close()


async def test_a_connection_the_service_closed_while_idle_is_replaced() -> None:
    def once(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_answer(b"1"))
        writer.close()  # keep-alive announced, but the service drops the connection afterwards

    async with _server(once) as (url, _, connections):
        pool = HTTP1Pool(4, timeout=2.0)
        assert await pool.get(url, "/a", {}) == (200, b"1")
        await asyncio.sleep(0.05)
        assert await pool.get(url, "/b", {}) == (200, b"1")
        await pool.close()
    assert connections[0] == 2


async def test_connection_close_is_honoured() -> None:
    async with _server(lambda _, writer: writer.write(_answer(b"1", extra="connection: close\r\n"))) as (
        url,
        _,
        connections,
    ):
        pool = HTTP1Pool(4, timeout=2.0)
        await pool.get(url, "/a", {})
        await pool.get(url, "/b", {})
        await pool.close()
    assert connections[0] == 2


async def test_no_answer_in_time_is_a_timeout() -> None:
    async with _server(lambda _, __: None) as (url, _, _):
        pool = HTTP1Pool(4, timeout=0.2)
        with pytest.raises(TimeoutError):
            await pool.get(url, "/slow", {})
        await pool.close()


async def test_a_half_answer_then_close_fails() -> None:
    def half(_: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        writer.close()

    async with _server(half) as (url, _, _):
        pool = HTTP1Pool(4, timeout=2.0)
        with pytest.raises(UpstreamTransportError):
            await pool.get(url, "/x", {})
        await pool.close()


async def test_an_unreachable_service_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = HTTP1Pool(4, timeout=2.0)
    with pytest.raises(UpstreamTransportError, match="cannot connect"):
        await pool.get(f"http://127.0.0.1:{port}", "/x", {})


async def test_garbage_is_a_transport_error() -> None:
    async with _server(lambda _, writer: writer.write(b"SPAM\r\n\r\n")) as (url, _, _):
        pool = HTTP1Pool(4, timeout=2.0)
        with pytest.raises(UpstreamTransportError):
            await pool.get(url, "/x", {})
        await pool.close()


async def test_a_post_sends_its_body_with_its_length() -> None:
    async with _server(lambda _, writer: writer.write(_answer(b"{}", status="201 Created"))) as (url, heads, _):
        pool = HTTP1Pool(4, timeout=2.0)
        body = b'{"purpose":"p"}'
        assert await pool.request("POST", url, "/v1/me/consents", {"content-type": "application/json"}, body) == (
            201,
            b"{}",
        )
        await pool.close()
    assert heads[0].startswith(b"POST /v1/me/consents HTTP/1.1\r\n")
    assert f"\r\nContent-Length: {len(body)}\r\n".encode() in heads[0]


async def test_a_header_with_a_line_break_is_never_sent() -> None:
    async with _server(lambda _, writer: writer.write(_answer(b"1"))) as (url, heads, _):
        pool = HTTP1Pool(4, timeout=2.0)
        with pytest.raises(ValueError, match="line break"):
            await pool.get(url, "/x", {"user-agent": "a\r\nx-injected: 1"})
        await pool.close()
    assert heads == []


async def test_only_a_get_is_sent_again_when_a_reused_connection_closes_before_answering() -> None:
    answered: set[int] = set()

    def first_only(_: bytes, writer: asyncio.StreamWriter) -> None:
        if id(writer) in answered:
            writer.close()  # the second request on a connection: closed without a byte of answer
            return
        answered.add(id(writer))
        writer.write(_answer(b"1"))

    async with _server(first_only) as (url, heads, connections):
        pool = HTTP1Pool(4, timeout=2.0)
        assert await pool.get(url, "/a", {}) == (200, b"1")
        assert await pool.get(url, "/b", {}) == (200, b"1")  # sent again on a new connection
        assert connections[0] == 2
        with pytest.raises(UpstreamTransportError):
            await pool.request("POST", url, "/c", {}, b"x")
        await pool.close()
    assert [head.split(b" ", 2)[:2] for head in heads] == [
        [b"GET", b"/a"],
        [b"GET", b"/b"],
        [b"GET", b"/b"],
        [b"POST", b"/c"],
    ]
