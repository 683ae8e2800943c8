"""The gateway: every web endpoint's request, from routing to the streamed response.

The path, one concern per step: `Gateway.__call__` routes (API or endpoint) ->
`handle_request` resolves the endpoint -> `auth.authenticate` (before anything can wake a
replica) -> `proxy.read_body` -> `admission.admit` -> `FunctionQueue.acquire` (picks the replica
via `router.pick_replica`, or waits while the autoscaler starts one) -> `proxy.stream_response`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from ember.http1 import HttpError
from ember.server.deployments import RESERVED_APP_NAMES
from ember.server.errors import ApiError
from ember.server.gateway.admission import Overloaded, admit
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
from ember.server.gateway.queue import QueueTimeout
from ember.server.lifecycle import ReplicaStartupError
from ember.server.settings import ServerSettings


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

    def __init__(self, api: Any, settings: ServerSettings) -> None:
        self.api, self.settings = api, settings
        self.bodies = BodyBudget(settings.max_buffered_bytes)

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
        for deployment in self.api.state.plane.deployments.all():
            if deployment.app.casefold() == app:
                for spec in deployment.request.functions:
                    if spec.name.casefold() == function:
                        return deployment.app, spec.name
                return deployment.app, function
        return app, function

    async def handle_request(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, request_id: str
    ) -> None:
        plane = self.api.state.plane
        websocket = scope["type"] == "websocket"
        try:
            deployment = plane.deployments.current(endpoint.app)
            spec = deployment.spec(endpoint.function)
            if spec.web is None:
                raise ApiError(
                    404,
                    "NotFoundError",
                    f"{endpoint.app}.{endpoint.function} is not a web endpoint",
                )
            if spec.web.requires_proxy_auth:
                tokens = self.api.state.tokens
                authenticate(
                    scope["headers"], endpoint.app, lambda secret: tokens.verify(plane, secret)
                )
            body = (
                b""
                if websocket
                else await read_body(
                    scope,
                    receive,
                    self.settings.max_request_body,
                    self.settings.client_timeout,
                    self.bodies,
                )
            )
            pool = plane.deployments.pool(deployment, endpoint.function, "")
            admit(pool, self.settings.max_queued_requests)
            replica = await pool.queue.acquire(self.settings.gateway_wait_timeout)
        except ApiError as exc:
            await _error(send, websocket, exc.status, exc.type_name, exc.message, request_id)
            return
        except Unauthorized as exc:
            await _error(send, websocket, 401, "AuthError", str(exc), request_id)
            return
        except BodyTooLarge as exc:
            await _error(send, websocket, 413, "RequestTooLarge", str(exc), request_id)
            return
        except ClientTooSlow as exc:
            await _error(send, websocket, 408, "RequestTimeout", str(exc), request_id)
            return
        except Overloaded as exc:
            await _error(send, websocket, 503, "Overloaded", str(exc), request_id, retry_after=True)
            return
        except QueueTimeout as exc:
            await _error(
                send,
                websocket,
                503,
                "NoReplica",
                f"{exc}; retry later",
                request_id,
                retry_after=True,
            )
            return
        except ReplicaStartupError as exc:
            await _error(send, websocket, 502, "ReplicaStartupError", str(exc), request_id)
            return
        host = replica.handle.host
        port = spec.web.port if spec.web.kind == "web_server" else replica.handle.port
        try:
            if websocket:
                await proxy_websocket(host, port, endpoint.target, scope, receive, send)
            else:
                headers = upstream_headers(scope, request_id, spec.web.requires_proxy_auth)
                await stream_response(
                    plane.http,
                    host,
                    port,
                    endpoint.target,
                    scope,
                    receive,
                    send,
                    body,
                    headers,
                    request_id,
                    self.settings.client_timeout,
                )
        except HttpError as exc:
            await _error(
                send,
                websocket,
                502,
                "BadGateway",
                f"{endpoint.app}.{endpoint.function} failed to answer: {exc}",
                request_id,
            )
        finally:
            pool.queue.release(replica)


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
