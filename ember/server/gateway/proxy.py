"""Proxy one request to a replica and stream the response back as it arrives.

Request bodies are received in full (bounded by size and an idle timeout) before a replica slot is
taken, so a slow upload never holds a replica. All the bodies held at once share one server-wide
byte budget, so a flood of large uploads gets 503s instead of the server's memory. Responses
stream chunk by chunk (SSE, chunked), and a client that goes away cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ember.http1 import Http1Pool, HttpError
from ember.server.scheduling.admission import Overloaded

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
PROXY_CREDENTIALS = {b"authorization", b"modal-key", b"modal-secret"}


class BodyTooLarge(Exception):
    """413."""


class ClientGone(Exception):
    """The client disconnected while its request was under way."""


class ClientTooSlow(Exception):
    """408: the client sent nothing for the idle timeout while sending its body."""


class BodiesOverBudget(Overloaded):
    """503: the request bodies held right now use up the server's budget."""


class BodyBudget:
    """The bytes of request bodies the gateway may hold at once, across all requests."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def claim(self) -> BodyClaim:
        """A claim on the budget for the current request, given back when its task ends (the
        server runs each request in a task of its own), however it ends."""
        claim = BodyClaim(self)
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(claim.give_back)
        return claim


class BodyClaim:
    def __init__(self, budget: BodyBudget) -> None:
        self._budget, self.size = budget, 0

    def grow_to(self, size: int) -> None:
        extra = size - self.size
        if extra <= 0:
            return
        if self._budget.held + extra > self._budget.limit:
            raise BodiesOverBudget(
                f"the server is holding {self._budget.held} bytes of request bodies, near its "
                f"limit of {self._budget.limit} (--max-buffered-bytes); retry shortly"
            )
        self._budget.held += extra
        self.size = size

    def give_back(self, _: object = None) -> None:
        self._budget.held -= self.size
        self.size = 0


async def read_body(
    scope: Scope, receive: Receive, limit: int, idle_timeout: float, budget: BodyBudget
) -> bytes:
    """The whole request body, within `limit` bytes and the server-wide `budget`."""
    limit = min(limit, budget.limit)
    declared = _content_length(scope["headers"])
    if declared is not None and declared > limit:
        raise BodyTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
    claim = budget.claim()
    claim.grow_to(declared or 0)  # refused before a byte is read, if a length is declared
    chunks, size = [], 0
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                message = await receive()
        except TimeoutError:
            raise ClientTooSlow(f"no request data for {idle_timeout:g} s") from None
        if message["type"] == "http.disconnect":
            raise ClientGone("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body exceeds the {limit}-byte limit")
        claim.grow_to(size)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def upstream_headers(scope: Scope, request_id: str, strip_credentials: bool) -> Headers:
    dropped = HOP_BY_HOP | (PROXY_CREDENTIALS if strip_credentials else set())
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in dropped]
    client = scope.get("client")
    if client:
        headers.append((b"x-forwarded-for", client[0].encode()))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    headers.append((b"x-request-id", request_id.encode()))
    return headers


async def stream_response(
    http: Http1Pool,
    host: str,
    port: int,
    target: str,
    scope: Scope,
    receive: Receive,
    send: Send,
    body: bytes,
    headers: Headers,
    request_id: str,
    send_timeout: float,
    answered: Callable[[], None],
    quick_ack: bool = False,
) -> int:
    """Send the request upstream; stream status, headers and body back to the client. Returns
    the status; `answered()` is called once the upstream's answer begins. `quick_ack`: the
    upstream may sit behind pasta (Http1Pool.request)."""
    response = await http.request(
        scope["method"], host, port, target, headers, body, quick_ack=quick_ack
    )
    answered()
    disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        out_headers = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        length = response.header(b"content-length")
        if length is not None:
            out_headers.append((b"content-length", length))
        out_headers.append((b"x-request-id", request_id.encode()))
        await send(
            {"type": "http.response.start", "status": response.status, "headers": out_headers}
        )
        async for chunk in response.iter_body():
            if disconnected.done():
                raise ClientGone("client disconnected")
            async with asyncio.timeout(send_timeout):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return response.status
    except (ClientGone, TimeoutError, HttpError):
        await response.aclose()  # cancels the upstream request with the connection
        raise
    finally:
        disconnected.cancel()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def proxy_websocket(
    host: str, port: int, target: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Pass a WebSocket through: connect upstream first, then accept and pump both ways."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    subprotocols = list(scope.get("subprotocols") or [])
    try:
        upstream = await connect(
            f"ws://{host}:{port}{target}", subprotocols=subprotocols or None, open_timeout=10
        )
    except (OSError, TimeoutError) as exc:
        await send({"type": "websocket.close", "code": 1011, "reason": f"upstream: {exc}"[:120]})
        return
    await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close()
                return
            if message["type"] != "websocket.receive":
                continue  # websocket.connect, already answered by the accept
            data: str | bytes = message.get("bytes") or message.get("text") or ""
            await upstream.send(data)

    async def upstream_to_client() -> None:
        try:
            async for data in upstream:
                key = "bytes" if isinstance(data, bytes) else "text"
                await send({"type": "websocket.send", key: data})
        except ConnectionClosed:
            pass
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [
        asyncio.ensure_future(client_to_upstream()),
        asyncio.ensure_future(upstream_to_client()),
    ]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await upstream.close()
