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


async def wait_for_port(spec: wire.WebEndpointSpec, host: str = "127.0.0.1") -> None:
    """Wait until something accepts connections on the web_server's port."""
    deadline = time.monotonic() + spec.startup_timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, spec.port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"web_server did not listen on port {spec.port} within "
                    f"{spec.startup_timeout:.0f} s (startup_timeout)"
                ) from None
            await asyncio.sleep(0.1)
