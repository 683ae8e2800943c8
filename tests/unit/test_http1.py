"""The server-to-replica HTTP client against a scripted server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import pytest

from ember import http1
from ember.http1 import Http1Pool, HttpError

Handler = Callable[[int, int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return head + await reader.readexactly(length)


class Script:
    """A server that hands each request to `handler(connection number, request number on that
    connection, ...)`; the handler returns False to close the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections = handler, 0
        self.writers: list[asyncio.StreamWriter] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        number, request = self.connections, 0
        try:
            while True:
                await read_request(reader)
                request += 1
                if not await self.handler(number, request, reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in self.writers), return_exceptions=True)
        await self.server.wait_closed()


async def test_a_reused_connection_closed_by_the_peer_is_retried_on_a_fresh_one() -> None:
    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if request == 2:  # as a keep-alive timeout racing the next request: closed, no answer
            return False
        writer.write(OK)
        await writer.drain()
        return True

    script = Script(handler)
    pool = Http1Pool()
    async with script as port:
        for _ in range(2):
            response = await pool.request("POST", "127.0.0.1", port, "/", body=b"x")
            assert (response.status, await response.read()) == (200, b"ok")
    assert script.connections == 2
    await pool.close()


async def test_an_idle_connection_expires_before_the_replicas_keep_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe's D4, second trigger: bursts about 5 s apart (uvicorn's keep-alive) met
    connections the replica's server was closing. One idle for IDLE_EXPIRY (4 s) is not reused."""

    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(OK)
        return True

    now = [1000.0]
    monkeypatch.setattr(http1, "time", SimpleNamespace(monotonic=lambda: now[0]))
    script = Script(handler)
    pool = Http1Pool()
    async with script as port:
        for idle in (0.0, http1.IDLE_EXPIRY - 0.1, http1.IDLE_EXPIRY):
            now[0] += idle
            await (await pool.request("GET", "127.0.0.1", port, "/")).read()
        assert script.connections == 2  # kept for 3.9 s, then a new one after 4 s idle
        assert http1.IDLE_EXPIRY < 5.0  # a web_server on uvicorn (vLLM) closes after 5 s idle
    await pool.close()


async def test_a_streamed_body_is_not_sent_twice() -> None:
    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if request == 2:
            return False
        writer.write(OK)
        return True

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    pool = Http1Pool()
    async with Script(handler) as port:
        await (await pool.request("POST", "127.0.0.1", port, "/", body=b"x")).read()
        with pytest.raises(HttpError):
            await pool.request("POST", "127.0.0.1", port, "/", body=body())
    await pool.close()


async def test_a_response_cut_short_is_an_error_not_a_retry() -> None:
    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart")
        await writer.drain()
        return False

    script = Script(handler)
    pool = Http1Pool()
    async with script as port:
        response = await pool.request("GET", "127.0.0.1", port, "/")
        with pytest.raises(HttpError, match="mid-response"):
            await response.read()
    assert script.connections == 1
    await pool.close()


async def test_fresh_requests_neither_reuse_nor_keep_connections() -> None:
    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(OK)
        return True

    script = Script(handler)
    pool = Http1Pool()
    async with script as port:
        await (await pool.request("GET", "127.0.0.1", port, "/")).read()
        await (await pool.request("GET", "127.0.0.1", port, "/", fresh=True)).read()
        await (await pool.request("GET", "127.0.0.1", port, "/")).read()
    assert script.connections == 2  # the third reused the first; the probe had its own
    await pool.close()


async def test_chunked_and_read_until_close_bodies() -> None:
    async def handler(
        connection: int, request: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if connection == 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            return True
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
        await writer.drain()
        return False

    pool = Http1Pool()
    async with Script(handler) as port:
        assert await (await pool.request("GET", "127.0.0.1", port, "/")).read() == b"abcde"
        response = await pool.request("GET", "127.0.0.1", port, "/", fresh=True)
        assert await response.read() == b"until close"
    await pool.close()
