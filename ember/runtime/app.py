"""The ASGI app of a replica: internal routes under /__ember/, the user's web app elsewhere.

`/__ember/inputs` runs a batch of inputs one after the other and streams each output frame as it
is done, so the server can hold every input to its own `timeout` and keep what finished.
`/__ember/health` answers 503 while enter hooks run, and for a `web_server` also checks that the
user's server still listens. `/__ember/park` and `/__ember/restore` run the `@before_park` and
`@after_restore` hooks (the platform parks replicas; user code cannot be reached there).
`/__ember/metrics` serves what the user's code registered with
`ember.runtime.metrics.provide_metrics` (204: nothing).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from ember import wire
from ember.runtime import phases
from ember.runtime.metrics import read_metrics
from ember.runtime.user_code import UserCode
from ember.runtime.web import build_web_app, port_open, wait_for_port
from ember.sdk.serialization import deserialize, error_frame, ok_frame

INTERNAL_PREFIX = "/__ember/"
Scope = dict[str, Any]
Message = dict[str, Any]


class ReplicaApp:
    def __init__(self, function: wire.FunctionSpec, user: UserCode) -> None:
        self.function, self.user = function, user
        self.ready = False
        self.web_app: Any = None
        self._threads = ThreadPoolExecutor(
            max_workers=function.max_inputs, thread_name_prefix="ember-input"
        )

    async def start(self) -> None:
        """Run the enter hooks (snap=False) and start the web endpoint; then ready."""
        with phases.timed("enter hooks"):
            await self.user.run_hooks(self.user.enter_hooks)
        web = self.function.web
        if web is not None and self.user.web_factory is not None:
            with phases.timed("web app"):
                self.web_app = await build_web_app(web, self.user.web_factory)
                if web.kind == "web_server":
                    await wait_for_port(web)
        self.ready = True

    async def shutdown(self) -> None:
        await self.user.run_hooks(self.user.exit_hooks)
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(INTERNAL_PREFIX):
            await self._internal(path[len(INTERNAL_PREFIX) :], scope, receive, send)
        elif self.web_app is not None and scope["type"] in ("http", "websocket"):
            await self.web_app(scope, receive, send)
        elif scope["type"] == "http":
            await _respond(send, 404, b"not a web endpoint", "text/plain")

    async def _internal(self, route: str, scope: Scope, receive: Any, send: Any) -> None:
        if route == "health":
            healthy = self.ready and await self._web_server_listens()
            await _respond(send, 200 if healthy else 503, b"ok" if healthy else b"not ready")
        elif route in ("park", "restore") and scope["method"] == "POST":
            await self._park_or_restore(send, route)
        elif route == "metrics":
            await self._serve_metrics(send)
        elif route == "inputs" and scope["method"] == "POST":
            inputs = wire.unpack_frames(await _read_body(receive))
            method = parse_qs(scope.get("query_string", b"").decode()).get("method", [None])[0]
            await self._serve_inputs(send, method, inputs)
        else:
            await _respond(send, 404, b"unknown internal route")

    async def _park_or_restore(self, send: Any, route: str) -> None:
        """Run the hooks; 200 with how long they took, or 500 with why they failed."""
        hooks = self.user.park_hooks if route == "park" else self.user.restore_hooks
        start = time.perf_counter()
        try:
            await self.user.run_hooks(hooks)
        except Exception as exc:  # noqa: BLE001 - the server decides what a failed hook means
            await _respond(send, 500, f"{type(exc).__name__}: {exc}".encode())
            return
        self.ready = route == "restore"
        await _respond(send, 200, b"%.4f" % (time.perf_counter() - start))

    async def _serve_metrics(self, send: Any) -> None:
        """The registered provider's Prometheus text; 204 without one (the server stops asking)."""
        try:
            text = await asyncio.to_thread(read_metrics)
        except Exception as exc:  # noqa: BLE001 - the provider's failure, said to the server
            await _respond(send, 500, f"metrics provider failed: {exc}".encode())
            return
        if text is None:
            await _respond(send, 204, b"")
        else:
            await _respond(send, 200, text, "text/plain; version=0.0.4")

    async def _web_server_listens(self) -> bool:
        web = self.function.web
        return web is None or web.kind != "web_server" or await port_open(web.port)

    async def _serve_inputs(self, send: Any, method: str | None, inputs: list[bytes]) -> None:
        outputs = self.run_inputs(method, inputs)
        if len(inputs) == 1:  # the `.remote()` case: one frame, sent with its length
            await _respond(
                send, 200, wire.pack_frames([await anext(outputs)]), wire.PICKLE_CONTENT_TYPE
            )
            return
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [_content(wire.PICKLE_CONTENT_TYPE)],
        }
        await send(start)
        async for frame in outputs:
            await send({"type": "http.response.body", "body": wire.pack_frames([frame]),
                        "more_body": True})  # fmt: skip
        await send({"type": "http.response.body", "body": b""})

    async def run_inputs(self, method: str | None, inputs: list[bytes]) -> AsyncIterator[bytes]:
        """One output frame per input, in order, each as soon as it is done."""
        try:
            fn = self.user.get(method)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, replica keeps serving
            for _ in inputs:
                yield wire.platform_error_frame("NotFoundError", str(exc))
            return
        if inspect.iscoroutinefunction(fn):
            for payload in inputs:
                yield await _run_async(fn, payload)
            return
        async for frame in self._run_sync(fn, inputs):
            yield frame

    async def _run_sync(self, fn: Callable[..., Any], inputs: list[bytes]) -> AsyncIterator[bytes]:
        """The batch runs in one thread (one hop, not one per input); frames come back as done."""
        loop = asyncio.get_running_loop()
        done: asyncio.Queue[bytes] = asyncio.Queue()

        def run_batch() -> None:
            for payload in inputs:
                loop.call_soon_threadsafe(done.put_nowait, _run_one(fn, payload))

        batch = loop.run_in_executor(self._threads, run_batch)
        for _ in inputs:
            yield await done.get()
        await batch


def _run_one(fn: Callable[..., Any], payload: bytes) -> bytes:
    try:
        args, kwargs = deserialize(payload, "the function's arguments")
        return ok_frame(fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - user errors travel back to the caller
        return error_frame(exc)


async def _run_async(fn: Callable[..., Any], payload: bytes) -> bytes:
    try:
        args, kwargs = deserialize(payload, "the function's arguments")
        return ok_frame(await fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001
        return error_frame(exc)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _content(content_type: str) -> tuple[bytes, bytes]:
    return (b"content-type", content_type.encode())


async def _respond(send: Any, status: int, body: bytes, content_type: str = "text/plain") -> None:
    headers = [_content(content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
