"""The one HTTP client from the SDK and CLI to the control plane.

httpx is imported where a client is made, not here: every replica imports the SDK, and most never
call the server (its import is a good part of a replica's start)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ember import wire
from ember.sdk.config import ClientSettings
from ember.sdk.exceptions import AuthError, ConnectionError, error_from_wire

if TYPE_CHECKING:
    import httpx

_clients: dict[tuple[str, str | None, str | None], Client] = {}
OVERLOADED_WAIT = 600.0  # seconds a request refused with 503 + Retry-After keeps being retried


class Client:
    """Talks to one server with one token; used only on the SDK's background loop."""

    def __init__(self, server_url: str, token: str | None, ca_cert: str | None = None) -> None:
        import httpx

        self.server_url = server_url.rstrip("/")
        self.token = token
        headers = {wire.VERSION_HEADER: str(wire.API_VERSION)}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(
            base_url=self.server_url,
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
            verify=ssl.create_default_context(cafile=ca_cert) if ca_cert else True,
        )

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
        """Send a request; raise the matching Ember exception for any error status.

        A 503 with Retry-After (a function's queue is full) is sent again after the wait it asks
        for, as the input would have waited in the queue."""
        import httpx

        deadline = time.monotonic() + OVERLOADED_WAIT
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise ConnectionError(
                    f"cannot reach the Ember server at {self.server_url}: {exc}"
                ) from exc
            retry_after = response.headers.get("retry-after")
            if response.status_code != 503 or retry_after is None or time.monotonic() > deadline:
                break
            await asyncio.sleep(float(retry_after))
        if response.status_code >= 400:
            raise _error_from_response(response)
        return response

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
                    raise _error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise ConnectionError(
                f"cannot reach the Ember server at {self.server_url}: {exc}"
            ) from exc


def _error_from_response(response: httpx.Response) -> Exception:
    try:
        info = wire.ErrorBody.model_validate(response.json()).error
    except (json.JSONDecodeError, ValueError):
        info = wire.ErrorInfo(
            type="ServerError", message=f"HTTP {response.status_code}: {response.text}"
        )
    if response.status_code == 401:
        return AuthError(info.message)
    return error_from_wire(info.type, info.message)
