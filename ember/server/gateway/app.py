"""The gateway: every web endpoint's request, from routing to the streamed response.

The path, one concern per step: `Gateway.__call__` routes (API or endpoint) ->
`handle_request`: the endpoint's spec -> `auth.authenticate` (before anything can wake a
replica) -> `proxy.read_body` -> `ControlPlane.resolve` and `admit` (the front door `.remote()`
shares) -> `SlotQueue.acquire` (a replica via `router.pick_replica`, or wait while the autoscaler
starts one) -> `proxy.stream_response`. Errors become responses in one table, `ERRORS`.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ember import wire
from ember.http1 import HttpError
from ember.server.api.auth import TokenCache
from ember.server.deployments import RESERVED_APP_NAMES
from ember.server.errors import ApiError
from ember.server.gateway.auth import Unauthorized, authenticate
from ember.server.gateway.proxy import (
    BodyBudget,
    BodyTooLarge,
    ClientGone,
    ClientTooSlow,
    Receive,
    Scope,
    Send,
    proxy_websocket,
    read_body,
    stream_response,
    upstream_headers,
)
from ember.server.plane import ControlPlane
from ember.server.replicas.state import ReplicaRecord
from ember.server.scheduling.admission import ANONYMOUS, Overloaded, Principal
from ember.server.scheduling.queue import QueueTimeout, ReplicaStartupError
from ember.server.settings import ServerSettings

# Exception -> (status, error type, send Retry-After)
ERRORS: dict[type[Exception], tuple[int, str, bool]] = {
    Unauthorized: (401, "AuthError", False),
    BodyTooLarge: (413, "RequestTooLarge", False),
    ClientTooSlow: (408, "RequestTimeout", False),
    Overloaded: (503, "Overloaded", True),
    QueueTimeout: (503, "NoReplica", True),
    ReplicaStartupError: (502, "ReplicaStartupError", False),
}


class Reply:
    """A request's status for the metrics: the replica's, or that of the error the gateway
    sent through `send` (499: none, the client left). The replica's body does not pass here."""

    __slots__ = ("_send", "started", "status")

    def __init__(self, send: Send) -> None:
        self._send, self.started, self.status = send, time.perf_counter(), 499

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)


class NoEndpoint(Exception):
    """404, the same for an unknown app, a stopped one, an unknown function or one that is not
    a web endpoint: an unauthenticated caller learns nothing from it."""


@dataclass(frozen=True)
class Endpoint:
    app: str
    function: str
    target: str  # path + query for the replica


def endpoint_urls(settings: ServerSettings, app: str, function: str) -> list[str]:
    urls = [f"{settings.url}/{app}/{function}/"]
    if settings.domain:
        scheme = "https" if settings.tls else "http"
        urls.append(f"{scheme}://{app}--{function}.{settings.domain}/".lower())
    return urls


class Gateway:
    """ASGI front door: the control plane's API, or a web endpoint."""

    def __init__(self, api: Any, plane: ControlPlane, tokens: TokenCache) -> None:
        self.api, self.plane, self.tokens = api, plane, tokens
        self.settings = plane.settings
        self.bodies = BodyBudget(self.settings.max_buffered_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.route(scope) if scope["type"] in ("http", "websocket") else None
        if endpoint is None:
            await self.api(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        with contextlib.suppress(ClientGone):  # nobody is left to answer
            await self.handle_request(scope, receive, send, endpoint, request_id)

    def route(self, scope: Scope) -> Endpoint | None:
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        suffix = f"?{query}" if query else ""
        host = _host(scope)
        domain = self.settings.domain
        if domain and host.endswith("." + domain):
            app, sep, function = host[: -len(domain) - 1].rpartition("--")
            if sep:
                return Endpoint(*self._names_in_host(app, function), path + suffix)
        parts = path.split("/", 3)  # "", app, function, rest
        if len(parts) < 3 or parts[1] in RESERVED_APP_NAMES or not parts[2]:
            return None  # the server's own paths (/docs, /api/..., /healthz) and "/"
        rest = "/" + (parts[3] if len(parts) > 3 else "")
        return Endpoint(parts[1], parts[2], rest + suffix)

    def _names_in_host(self, app: str, function: str) -> tuple[str, str]:
        """The deployed names a lowercased host stands for (deploys refuse names that differ
        only in case, so there is at most one)."""
        for deployment in self.plane.deployments.all():
            if deployment.app.casefold() == app:
                for spec in deployment.request.functions:
                    if spec.name.casefold() == function:
                        return deployment.app, spec.name
                return deployment.app, function
        return app, function

    async def handle_request(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, request_id: str
    ) -> None:
        websocket = scope["type"] == "websocket"
        reply = Reply(send)
        try:
            web = self._web_endpoint(endpoint)
            principal = await self._authenticate(scope, endpoint, web)
            body = b"" if websocket else await self._body(scope, receive)
            pool = self.plane.resolve(endpoint.app, endpoint.function, "")
            self.plane.admit(principal, pool)
            waiting = time.perf_counter()
            replica = await pool.queue.acquire(self.settings.gateway_wait_timeout)
        except Exception as exc:  # noqa: BLE001 - mapped to a response by ERRORS, or re-raised
            await _refuse(reply.send, websocket, exc, request_id)
            if not isinstance(exc, NoEndpoint):  # only deployed names become labels
                self._record(endpoint, reply)
            return
        held = time.perf_counter()
        self.plane.metrics.waited(pool, held - waiting)
        try:
            reply.status = await self._proxy(
                scope, receive, send, endpoint, web, replica, body, request_id
            )
        except HttpError as exc:
            failed = f"{endpoint.app}.{endpoint.function} failed to answer: {exc}"
            await _error(reply.send, websocket, 502, "BadGateway", failed, request_id)
        finally:
            pool.queue.release(replica)
            self.plane.metrics.slot_held(replica, 1, time.perf_counter() - held)
            self._record(endpoint, reply)

    def _record(self, endpoint: Endpoint, reply: Reply) -> None:
        metrics = self.plane.metrics
        metrics.request(endpoint.app, endpoint.function, "web", reply.status, reply.started)

    def _web_endpoint(self, endpoint: Endpoint) -> wire.WebEndpointSpec:
        deployment = self.plane.deployments.find(endpoint.app)
        spec = deployment.find(endpoint.function) if deployment else None
        if spec is None or spec.web is None:
            raise NoEndpoint(f"no web endpoint at /{endpoint.app}/{endpoint.function}/")
        return spec.web

    async def _authenticate(
        self, scope: Scope, endpoint: Endpoint, web: wire.WebEndpointSpec
    ) -> Principal:
        if not web.requires_proxy_auth:
            return ANONYMOUS
        verify = lambda secret: self.tokens.verify(self.plane, secret)  # noqa: E731
        return await authenticate(scope["headers"], endpoint.app, verify)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        settings = self.settings
        return await read_body(
            scope, receive, settings.max_request_body, settings.client_timeout, self.bodies
        )

    async def _proxy(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        web: wire.WebEndpointSpec,
        replica: ReplicaRecord,
        body: bytes,
        request_id: str,
    ) -> int:
        """The replica's answer streamed to the client; returns its status."""
        handle = replica.handle
        assert handle is not None
        port = handle.web_port if web.kind == "web_server" else handle.port
        assert port is not None
        if scope["type"] == "websocket":
            await proxy_websocket(handle.host, port, endpoint.target, scope, receive, send)
            return 101
        headers = upstream_headers(scope, request_id, web.requires_proxy_auth)
        return await stream_response(
            self.plane.http, handle.host, port, endpoint.target, scope, receive, send, body,
            headers, request_id, self.settings.client_timeout,
            lambda: self.plane.cold_starts.answered(replica),
            quick_ack=web.kind == "web_server",  # its own port: through pasta when sandboxed
        )  # fmt: skip


async def _refuse(send: Send, websocket: bool, exc: Exception, request_id: str) -> None:
    """Answer a request that never reached a replica; an unexpected exception propagates."""
    if isinstance(exc, ApiError):
        await _error(send, websocket, exc.status, exc.type_name, exc.message, request_id)
    elif isinstance(exc, NoEndpoint):
        await _error(send, websocket, 404, "NotFoundError", str(exc), request_id)
    else:
        kind = next((k for k in ERRORS if isinstance(exc, k)), None)
        if kind is None:
            raise exc
        status, type_name, retry_after = ERRORS[kind]
        message = f"{exc}; retry later" if isinstance(exc, QueueTimeout) else str(exc)
        await _error(send, websocket, status, type_name, message, request_id, retry_after)


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1").split(":")[0].lower())
    return ""


async def _error(
    send: Send,
    websocket: bool,
    status: int,
    type_name: str,
    message: str,
    request_id: str,
    retry_after: bool = False,
) -> None:
    if websocket:
        await send(
            {
                "type": "websocket.close",
                "code": 1008 if status == 401 else 1011,
                "reason": message[:120],
            }
        )
        return
    body = json.dumps({"error": {"type": type_name, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"x-request-id", request_id.encode()),
    ]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except (OSError, RuntimeError):
        pass  # the response had already started, or the client left
