"""Bounded shutdown: on SIGTERM, requests in flight get a grace period, then a clear 503.

uvicorn stops listening, waits at most `timeout_graceful_shutdown` for the requests under way,
then cancels what is left and runs the lifespan's shutdown (which stops every replica).
`InFlight` wraps the server's ASGI app: it says in the log what the grace period waits for, and
turns a request cancelled at its end into a 503 that says why, instead of uvicorn's bare 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("ember.server")

CALL = "function call"
WEB = "web request"
API = "API request"


class InFlight:
    """The server's app, with the requests under way known by kind."""

    def __init__(self, app: App, grace: float, is_endpoint: Callable[[Scope], bool]) -> None:
        self.app, self.grace, self._is_endpoint = app, grace, is_endpoint
        self._under_way: dict[int, Scope] = {}
        self.closing = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        self._under_way[id(scope)] = scope
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not self.closing:
                raise
            # uvicorn cancelled it at the end of the grace period: answer, then end quietly.
            await self._refuse(scope, send)
        finally:
            del self._under_way[id(scope)]

    def kind(self, scope: Scope) -> str:
        path: str = scope["path"]
        if path.startswith("/api/v1/apps/") and path.rsplit("/", 1)[-1] in ("call", "map"):
            return CALL
        return WEB if self._is_endpoint(scope) else API

    def begin_shutdown(self) -> None:
        """Shutdown starts: say what the grace period waits for."""
        self.closing = True
        counts = Counter(self.kind(scope) for scope in self._under_way.values())
        if not counts:
            log.info("stopping: no requests in flight")
            return
        what = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(counts.items()))
        log.warning(
            "stopping: waiting up to %g s (--shutdown-grace) for %s in flight", self.grace, what
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
        kind = self.kind(scope)
        log.warning(
            "stopping: failed %s %s, still running after the %g s grace",
            scope.get("method", "WEBSOCKET"),
            scope["path"],
            self.grace,
        )
        if scope["type"] != "http":
            return  # uvicorn closes the WebSocket's connection
        message = (
            f"the server shut down before this {kind} finished (it waits {self.grace:g} s, "
            "--shutdown-grace, for work in flight); retry it once the server is back"
        )
        # A call's caller gets the SDK's ExecutionError; a web client, a plain 503.
        type_name = "ExecutionError" if kind == CALL else "ServerShuttingDown"
        body = json.dumps({"error": {"type": type_name, "message": message}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        with contextlib.suppress(RuntimeError, OSError):  # a response had started already
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})


class BoundedServer(uvicorn.Server):
    """uvicorn's server, whose shutdown says what it waits for."""

    def __init__(self, config: uvicorn.Config, in_flight: InFlight) -> None:
        super().__init__(config)
        self.in_flight = in_flight

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.in_flight.begin_shutdown()
        await super().shutdown(sockets)
