"""A replica process: import the user's code, run enter hooks, serve inputs, drain, run exit hooks.

Started by a backend as `python -m ember.runtime.replica` with one environment variable,
EMBER_REPLICA (a wire.ReplicaSettings), and an already-listening socket inherited as `listen_fd`.
Health is served from the first moment (503 while enter hooks run, 200 once ready), so the
server can tell a slow start from a stuck one. SIGTERM drains in-flight inputs, then runs @exit.
Volumes are mounted (runtime/mounts.py) before the user's module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import inspect
import os
import signal
import socket
import sys
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn

from ember import wire
from ember.runtime.mounts import mount_volumes
from ember.runtime.user_code import UserCode, load_user_code
from ember.runtime.volumes import VolumeError
from ember.runtime.web import build_web_app, wait_for_port
from ember.sdk.serialization import deserialize, error_frame, ok_frame

INTERNAL_PREFIX = "/__ember/"
Scope = dict[str, Any]


class Replica:
    """The ASGI app of a replica: internal routes under /__ember/, the user's web app elsewhere."""

    def __init__(self, settings: wire.ReplicaSettings, user: UserCode) -> None:
        self.settings, self.user = settings, user
        self.ready = False
        self.web_app: Any = None
        self._threads = ThreadPoolExecutor(
            max_workers=settings.function.max_inputs, thread_name_prefix="ember-input"
        )

    async def start(self) -> None:
        """Run enter hooks and start the web endpoint, then report ready; exit on failure."""
        try:
            await self.user.run_hooks(self.user.enter_hooks)
            if self.settings.function.web is not None and self.user.web_factory is not None:
                self.web_app = await build_web_app(
                    self.settings.function.web, self.user.web_factory
                )
                if self.settings.function.web.kind == "web_server":
                    await wait_for_port(self.settings.function.web)
        except BaseException:  # noqa: BLE001 - any startup failure ends the replica, loudly
            traceback.print_exc()
            print("replica startup failed; exiting", file=sys.stderr, flush=True)
            os._exit(1)
        self.ready = True

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
            status = 200 if self.ready else 503
            await _respond(send, status, b"ready" if self.ready else b"starting", "text/plain")
            return
        if route == "inputs" and scope["method"] == "POST":
            body = await _read_body(receive)
            method = _query_value(scope, "method")
            outputs = await self.run_inputs(method, wire.unpack_frames(body))
            await _respond(send, 200, wire.pack_frames(outputs), wire.PICKLE_CONTENT_TYPE)
            return
        await _respond(send, 404, b"unknown internal route", "text/plain")

    async def run_inputs(self, method: str | None, inputs: list[bytes]) -> list[bytes]:
        """Run a batch of inputs that the server sent in one slot, one after the other."""
        try:
            fn = self.user.get(method)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, replica keeps serving
            return [wire.platform_error_frame("NotFoundError", str(exc))] * len(inputs)
        if inspect.iscoroutinefunction(fn):
            return [await _run_async(fn, payload) for payload in inputs]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, _run_sync_batch, fn, inputs)

    async def shutdown(self) -> None:
        await self.user.run_hooks(self.user.exit_hooks)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _run_sync_batch(fn: Any, inputs: list[bytes]) -> list[bytes]:
    outputs = []
    for payload in inputs:
        try:
            args, kwargs = deserialize(payload, "the function's arguments")
            outputs.append(ok_frame(fn(*args, **kwargs)))
        except Exception as exc:  # noqa: BLE001 - user errors travel back to the caller
            outputs.append(error_frame(exc))
    return outputs


async def _run_async(fn: Any, payload: bytes) -> bytes:
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


async def _respond(send: Any, status: int, body: bytes, content_type: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _query_value(scope: Scope, key: str) -> str | None:
    for part in scope.get("query_string", b"").decode().split("&"):
        name, _, value = part.partition("=")
        if name == key:
            return str(value)
    return None


def die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the server dies, so no replica outlives it."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _ReplicaServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Like uvicorn's, minus re-raising the signal at the end: exit hooks must run first."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


async def serve(settings: wire.ReplicaSettings) -> None:
    # Volumes first: the user's module may read them as it is imported.
    mounts = mount_volumes(settings.volume_root, settings.replica_id, settings.function.volumes)
    try:
        await _serve(settings)
    finally:
        mounts.unmount()


async def _serve(settings: wire.ReplicaSettings) -> None:
    user = load_user_code(settings)
    replica = Replica(settings, user)
    config = uvicorn.Config(
        replica,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=int(settings.graceful_shutdown),
        access_log=False,
    )
    server = _ReplicaServer(config)
    starting = asyncio.ensure_future(replica.start())
    # A socket object of the inherited fd (uvicorn's own `fd=` assumes a UNIX socket, which
    # leaves Nagle on: 40 ms per small response on TCP).
    listener = socket.socket(fileno=settings.listen_fd)
    await server.serve(sockets=[listener])  # returns after SIGTERM, once inputs have finished
    starting.cancel()
    await replica.shutdown()


def main() -> None:
    settings = wire.ReplicaSettings.model_validate_json(os.environ["EMBER_REPLICA"])
    die_with_parent()
    # Nested calls (`other_function.remote()` inside user code) reach the same server.
    os.environ["EMBER_SERVER_URL"] = settings.server_url
    os.environ["EMBER_TOKEN"] = settings.token
    if settings.ca_cert:
        os.environ["EMBER_CA_CERT"] = settings.ca_cert
    print(
        f"replica {settings.replica_id} of {settings.app_name}.{settings.function.name} "
        f"(v{settings.version}) starting",
        flush=True,
    )
    try:
        asyncio.run(serve(settings))
    except VolumeError as exc:  # a volume deleted since the deploy, say: the message says it all
        print(f"cannot mount volumes: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:  # noqa: BLE001 - import errors and the like: print, then fail the replica
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    main()
