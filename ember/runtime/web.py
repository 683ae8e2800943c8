"""Turn a web endpoint function into the ASGI app a replica serves (or wait for its server)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from ember import wire


async def build_web_app(spec: wire.WebEndpointSpec, factory: Callable[[], Any]) -> Any:
    """Call the user's function and wrap what it returns as ASGI; None for `web_server`."""
    if spec.kind == "fastapi":
        from fastapi import FastAPI

        app = FastAPI()
        app.add_api_route("/", factory, methods=[spec.method])
        return app
    result = factory()
    if inspect.isawaitable(result):
        result = await result
    if spec.kind == "asgi":
        return result
    if spec.kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        return WSGIMiddleware(result)
    return None  # web_server: the function started a server on spec.port


async def port_open(port: int | None, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on `port` (in this replica's network namespace)."""
    try:
        async with asyncio.timeout(2.0):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def wait_for_port(spec: wire.WebEndpointSpec) -> None:
    """Wait until the web_server's own process accepts connections on its port."""
    deadline = time.monotonic() + spec.startup_timeout
    while not await port_open(spec.port):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"web_server did not listen on port {spec.port} within "
                f"{spec.startup_timeout:.0f} s (startup_timeout)"
            )
        await asyncio.sleep(0.1)
