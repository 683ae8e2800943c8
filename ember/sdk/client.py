"""The one HTTP client from the SDK and CLI to the control plane.

Inputs (`.remote()`, `.spawn()`, `.map()`'s batches) go through `post`, on Ember's lean HTTP/1.1
client (`ember/http1.py`): httpx costs about 0.7 ms of Python a request, more than the rest of a
warm call. Everything else goes through httpx (`request`, `stream`). Both are imported where a
client is made, not here: every replica imports the SDK, and most never call the server."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ember import wire
from ember.sdk.config import ClientSettings
from ember.sdk.exceptions import AuthError, ConnectionError, error_from_wire
from ember.sdk.synchronizer import started_loop

if TYPE_CHECKING:
    import httpx

_clients: dict[tuple[str, str | None, str | None], Client] = {}
OVERLOADED_WAIT = 600.0  # seconds a request refused with 503 + Retry-After keeps being retried
CONNECT_TIMEOUT = 10.0
Reply = TypeVar("Reply")


class Client:
    """Talks to one server with one token; used only on the SDK's background loop."""

    def __init__(self, server_url: str, token: str | None, ca_cert: str | None = None) -> None:
        import httpx

        from ember import http1

        self.server_url = server_url.rstrip("/")
        self.token = token
        headers = {wire.VERSION_HEADER: str(wire.API_VERSION)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = urllib.parse.urlsplit(self.server_url)
        tls = ssl.create_default_context(cafile=ca_cert) if url.scheme == "https" else None
        self._http = httpx.AsyncClient(
            base_url=self.server_url,
            headers=headers,
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            verify=tls or True,
        )
        self._lean = http1.Http1Pool(max_idle_per_host=64, tls=tls)
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if tls else 80)
        self._prefix = url.path  # a server behind a proxy under a path of its own
        self._headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    @classmethod
    def from_settings(cls, settings: ClientSettings | None = None) -> Client:
        settings = settings or ClientSettings.load()
        if settings.server_url is None:
            raise ConnectionError(
                "no Ember server is configured: start one with `ember server`, or set "
                "EMBER_SERVER_URL and EMBER_TOKEN"
            )
        key = (settings.server_url, settings.token, settings.ca_cert)
        if key not in _clients:
            _clients[key] = cls(settings.server_url, settings.token, settings.ca_cert)
        return _clients[key]

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise the matching Ember exception for any error status."""
        import httpx

        async def send() -> tuple[httpx.Response, int, str | None]:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            return response, response.status_code, response.headers.get("retry-after")

        response = await _until_admitted(send)
        if response.status_code >= 400:
            raise _error_from_response(response.status_code, response.content)
        return response

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], params: dict[str, str] | None
    ) -> bytes:
        """POST `body` and return the response's; raise the matching Ember exception for any
        error status. The inputs' path, on the lean client."""
        from ember import http1

        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        target = f"{self._prefix}{path}{query}"
        fields = self._headers + [(k.encode(), v.encode()) for k, v in headers.items()]

        async def send() -> tuple[tuple[int, bytes], int, str | None]:
            try:
                response = await self._lean.request(
                    "POST", self._host, self._port, target, fields, body, CONNECT_TIMEOUT
                )
                content = await response.read()
            except http1.HttpError as exc:
                raise self._unreachable(exc) from exc
            retry_after = response.header(b"retry-after")
            status = response.status
            return (status, content), status, retry_after.decode() if retry_after else None

        status, content = await _until_admitted(send)
        if status >= 400:
            raise _error_from_response(status, content)
        return content

    async def close_connections(self) -> None:
        """Close the lean client's connections (a later `post` opens new ones)."""
        await self._lean.close()

    def _unreachable(self, exc: Exception) -> ConnectionError:
        return ConnectionError(f"cannot reach the Ember server at {self.server_url}: {exc}")

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Like `request`, but the body is read by the caller as it arrives."""
        import httpx

        try:
            async with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _error_from_response(response.status_code, response.content)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc


@atexit.register
def _close_connections() -> None:
    """Close the inputs' pooled connections at exit: one the server has closed stays half-open
    until it is closed, and asyncio warns about it when it is collected."""
    loop = started_loop()
    if loop is None or not _clients:
        return

    async def close_all() -> None:
        for client in _clients.values():
            await client.close_connections()

    with contextlib.suppress(Exception):  # a loop that is stuck or gone: nothing to wait for
        asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout=1.0)


async def _until_admitted(send: Callable[[], Awaitable[tuple[Reply, int, str | None]]]) -> Reply:
    """`send()`'s reply, sent again after the wait it asks for while it is a 503 with
    Retry-After (a function's queue is full), as the input would have waited in the queue."""
    deadline = time.monotonic() + OVERLOADED_WAIT
    while True:
        reply, status, retry_after = await send()
        if status != 503 or retry_after is None or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(float(retry_after))


def _error_from_response(status: int, body: bytes) -> Exception:
    try:
        info = wire.ErrorBody.model_validate_json(body).error
    except ValueError:
        text = body.decode(errors="replace")
        info = wire.ErrorInfo(type="ServerError", message=f"HTTP {status}: {text}")
    if status == 401:
        return AuthError(info.message)
    return error_from_wire(info.type, info.message)
