"""A lean HTTP/1.1 client for the hot hops (server -> replica, the SDK's inputs -> server), with
keep-alive, streaming and TLS.

httpx costs ~0.7 ms of Python per request, more than the whole budget of a warm call; this client
does only what those hops need: one request per connection at a time, Content-Length or chunked
bodies both ways, responses streamed as they arrive, idle connections reused.

A reused connection may have been closed by the peer a moment ago (its keep-alive ran out, or
it closed after an error) without our loop having seen the FIN yet. Such a request fails before a
byte of the response arrives and is sent again, once, on a fresh connection, as urllib3 does; and
idle connections are dropped after IDLE_EXPIRY, before a typical server's 5 s keep-alive ends.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools

CHUNK = 64 * 1024
MAX_BUFFERED_CHUNKS = 32  # then stop reading until the consumer catches up
IDLE_EXPIRY = 4.0  # seconds an idle connection is kept
Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """The connection failed or the peer broke the protocol."""


class _StaleConnection(HttpError):
    """A reused connection failed before any byte of the response: safe to send again."""


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False
    idle_since: float = 0.0
    quick_ack: bool = False  # the request it carries now asked for ack_now() after each read

    def close(self) -> None:
        self.writer.close()

    def ack_now(self) -> None:
        """Acknowledge what was read at once, not up to 40 ms later: a sandboxed replica's
        responses come through pasta, whose sockets keep Nagle's algorithm on, so the rest of a
        response written in two parts (head, then body) waits for this ACK. Linux drops quick-ACK
        mode by itself, hence after every read."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def usable(self, now: float) -> bool:
        fresh = now - self.idle_since < IDLE_EXPIRY
        return fresh and not self.reader.at_eof() and not self.writer.is_closing()


@dataclass(eq=False)
class Response:
    """A response whose body streams through `iter_body()` (or `read()`); a caller that stops
    early calls `aclose()`, which drops the connection."""

    status: int
    headers: Headers
    _body: asyncio.Queue[bytes | None] = field(repr=False)
    _room: asyncio.Event = field(repr=False)
    _pump: asyncio.Task[None] = field(repr=False)

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Chunks as they arrive; whatever has piled up meanwhile is joined into one."""
        finished = False
        while not finished:
            chunks = [await self._body.get()]
            while not self._body.empty():
                chunks.append(self._body.get_nowait())
            if chunks[-1] is None:
                finished = True
                chunks.pop()
            self._room.set()
            if chunks:
                yield b"".join(chunks)  # type: ignore[arg-type]
        await self._pump  # surfaces a broken connection instead of a silently short body

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_body()])

    async def aclose(self) -> None:
        if not self._pump.done():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)


class _Parser:
    """httptools callbacks -> status, headers, body chunks."""

    def __init__(self, body: asyncio.Queue[bytes | None]) -> None:
        self.headers: Headers = []
        self.headers_done = asyncio.get_running_loop().create_future()
        self.complete = False
        self.started = False  # a byte of the response has arrived
        self.keep_alive = False
        self.until_close = False  # the body ends when the connection does
        self.http = httptools.HttpResponseParser(self)
        self._body = body

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Read now: the parser resets its flags once the message is complete.
        self.keep_alive = self.http.should_keep_alive()
        names = {name.lower() for name, _ in self.headers}
        self.until_close = b"content-length" not in names and b"transfer-encoding" not in names
        if not self.headers_done.done():  # cancelled with the request that awaited it
            self.headers_done.set_result(True)

    def on_body(self, body: bytes) -> None:
        self._body.put_nowait(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Http1Pool:
    """Connections by (host, port), reused while idle."""

    def __init__(self, max_idle_per_host: int = 256, tls: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, int], deque[_Connection]] = defaultdict(deque)
        self._max_idle = max_idle_per_host
        self._open: set[_Connection] = set()
        self._tls = tls  # every connection of the pool is made with it, where given

    async def _connect(
        self, host: str, port: int, timeout: float | None, fresh: bool
    ) -> _Connection:
        idle = self._idle[(host, port)]
        now = time.monotonic()
        while idle and not fresh:
            conn = idle.pop()
            if conn.usable(now):
                conn.reused = True
                return conn
            self._discard(conn)
        try:
            connecting = asyncio.open_connection(
                host, port, limit=CHUNK * 4, ssl=self._tls, server_hostname=self._tls and host
            )
            reader, writer = await asyncio.wait_for(connecting, timeout)
        except (OSError, TimeoutError) as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc}") from exc
        conn = _Connection(reader, writer)
        self._open.add(conn)
        return conn

    async def request(
        self,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: Headers | None = None,
        body: bytes | AsyncIterator[bytes] = b"",
        connect_timeout: float | None = 5.0,
        fresh: bool = False,
        quick_ack: bool = False,
    ) -> Response:
        """Send a request; returns once the response headers are in (the body streams).

        `fresh`: on a new connection, not returned to the pool (health probes). `quick_ack`:
        acknowledge each read at once (a peer behind pasta: _Connection.ack_now); a syscall per
        read, so only where it is needed."""
        conn = await self._connect(host, port, connect_timeout, fresh)
        conn.quick_ack = quick_ack
        try:
            return await self._send(conn, method, host, port, target, headers or [], body, fresh)
        except _StaleConnection:
            if not isinstance(body, bytes):
                raise  # a streamed body cannot be sent twice
        conn = await self._connect(host, port, connect_timeout, fresh=True)
        conn.quick_ack = quick_ack
        return await self._send(conn, method, host, port, target, headers or [], body, fresh)

    async def _send(
        self,
        conn: _Connection,
        method: str,
        host: str,
        port: int,
        target: str,
        headers: Headers,
        body: bytes | AsyncIterator[bytes],
        once: bool,
    ) -> Response:
        pump: asyncio.Task[None] | None = None
        try:
            try:
                await _write_request(conn.writer, method, host, port, target, headers, body)
            except OSError as exc:
                raise _failure(conn, f"connection to {host}:{port} failed: {exc}") from exc
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            room = asyncio.Event()
            parser = _Parser(queue)
            pump = asyncio.ensure_future(self._pump(conn, parser, queue, room, host, port, once))
            if not await parser.headers_done:  # the pump ended without them
                try:
                    await pump  # raises why the response never came
                except HttpError as exc:
                    raise _failure(conn, str(exc), parser.started) from exc
                raise _failure(
                    conn, "connection closed before the response headers", parser.started
                )
        except BaseException:
            self._discard(conn)
            if pump is not None:  # cancelled while waiting: nobody will read what it raises
                pump.cancel()
                pump.add_done_callback(_retrieve)
            raise
        return Response(parser.http.get_status_code(), parser.headers, queue, room, pump)

    async def _pump(
        self,
        conn: _Connection,
        parser: _Parser,
        queue: asyncio.Queue[bytes | None],
        room: asyncio.Event,
        host: str,
        port: int,
        once: bool,
    ) -> None:
        """Read the response into the parser; hand the connection back once it is complete."""
        reusable = False
        try:
            while not parser.complete:
                while queue.qsize() > MAX_BUFFERED_CHUNKS:
                    room.clear()
                    await room.wait()
                data = await conn.reader.read(CHUNK)
                if conn.quick_ack:
                    conn.ack_now()
                parser.started = parser.started or bool(data)
                if not data:
                    if not (parser.complete or parser.until_close):
                        raise HttpError("connection closed mid-response")
                    break
                parser.http.feed_data(data)
            reusable = parser.keep_alive
        except httptools.HttpParserError as exc:
            raise HttpError(f"malformed response: {exc}") from exc
        except OSError as exc:  # e.g. reset by a peer that died
            raise HttpError(f"connection to {host}:{port} failed: {exc}") from exc
        finally:
            if not parser.headers_done.done():
                parser.headers_done.set_result(False)
            queue.put_nowait(None)
            if reusable and not once and len(self._idle[(host, port)]) < self._max_idle:
                conn.idle_since = time.monotonic()
                self._idle[(host, port)].append(conn)
            else:
                self._discard(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _failure(conn: _Connection, message: str, started: bool = False) -> HttpError:
    """A failure before any response byte on a reused connection may be retried."""
    return _StaleConnection(message) if conn.reused and not started else HttpError(message)


async def _write_request(
    writer: asyncio.StreamWriter,
    method: str,
    host: str,
    port: int,
    target: str,
    headers: Headers,
    body: bytes | AsyncIterator[bytes],
) -> None:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    if isinstance(body, bytes):
        lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
        writer.write(b"".join(lines) + body)
        await writer.drain()
        return
    lines.append(b"Transfer-Encoding: chunked\r\n\r\n")
    writer.write(b"".join(lines))
    async for chunk in body:
        if chunk:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
