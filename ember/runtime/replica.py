"""A replica process: `prepare()` the user's code once, then `serve()` it until SIGTERM.

Started by a backend as `python -m ember.runtime.replica` with two environment variables: the
pool's ReplicaSpec (what to run) and this replica's ReplicaAssignment (who it is, where to
listen, where to report). `prepare` mounts volumes, imports the user's module and runs the
`@enter(snap=True)` hooks; `serve` starts the listener and the input threads, runs the other
enter hooks and reports ready (or failed) on the status pipe. The split is where a template
process can fork replicas (prepare once, serve many). SIGTERM drains in-flight inputs, then runs
`@exit` hooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from ember import wire
from ember.process import become_subreaper, die_with_parent, end_replica
from ember.runtime import phases
from ember.runtime.app import ReplicaApp
from ember.runtime.mounts import Mounts, mount_volumes
from ember.runtime.user_code import UserCode, load_user_code
from ember.runtime.volumes import VolumeError

STATUS_PREFIX = "EMBER-STATUS "  # how a status line looks on stdout when there is no status pipe
KEEP_ALIVE = 120  # seconds; the server's pool drops idle connections well before this


@dataclass(frozen=True)
class Prepared:
    """The user's code imported and its snap hooks run: what `serve` needs, what a fork keeps."""

    spec: wire.ReplicaSpec
    user: UserCode


async def prepare(
    spec: wire.ReplicaSpec, check_hook: Callable[[str], None] | None = None
) -> Prepared:
    """Import the user's module, bind the class, run the `@enter(snap=True)` hooks (each checked
    by `check_hook(name)` after it ran: a template refuses CUDA there)."""
    with phases.timed("imports"):
        user = load_user_code(spec)
    with phases.timed("snap hooks"):
        for hook in user.snap_hooks:
            await user.run_hooks([hook])
            if check_hook is not None:
                check_hook(getattr(hook, "__qualname__", repr(hook)))
    return Prepared(spec, user)


async def serve(prepared: Prepared, assignment: wire.ReplicaAssignment, mounts: Mounts) -> None:
    """Listen, run the remaining enter hooks, report ready; return after SIGTERM and @exit."""
    app = ReplicaApp(prepared.spec.function, prepared.user)
    listener = _listener(assignment)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=int(prepared.spec.graceful_shutdown),
    )  # fmt: skip
    server = _ReplicaServer(config)
    starting = asyncio.ensure_future(_start(app, assignment, listener.getsockname()[1]))
    try:
        await server.serve(sockets=[listener])  # returns after SIGTERM, once inputs finished
    finally:
        starting.cancel()
        await app.shutdown()
        mounts.unmount()


async def _start(app: ReplicaApp, assignment: wire.ReplicaAssignment, port: int) -> None:
    """Enter hooks while health answers 503; a failure ends the replica, loudly."""
    try:
        await app.start()
    except asyncio.CancelledError:
        raise  # SIGTERM while starting: shut down normally, @exit hooks included
    except BaseException as exc:  # noqa: BLE001 - any startup failure ends the replica
        traceback.print_exc()
        report(assignment, wire.ReplicaStatus(state="failed", message=_describe(exc)))
        print("replica startup failed; exiting", file=sys.stderr, flush=True)
        end_replica(assignment.replica_id)
        os._exit(1)
    report(assignment, wire.ReplicaStatus(state="ready", port=port, phases=phases.take()))


def _listener(assignment: wire.ReplicaAssignment) -> socket.socket:
    # A socket object of the inherited fd (uvicorn's own `fd=` assumes a UNIX socket, which
    # leaves Nagle on: 40 ms per small response on TCP).
    if assignment.listen_fd >= 0:
        return socket.socket(fileno=assignment.listen_fd)
    listener = socket.create_server((assignment.bind_host, 0), backlog=1024)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def report(assignment: wire.ReplicaAssignment, status: wire.ReplicaStatus) -> None:
    """Tell the backend how the start went: one JSON line on the status pipe (or stdout)."""
    line = status.model_dump_json() + "\n"
    if assignment.status_fd >= 0:
        with contextlib.suppress(OSError):  # the backend is gone; SIGTERM follows
            os.write(assignment.status_fd, line.encode())
    else:
        print(STATUS_PREFIX + line, end="", flush=True)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


class _ReplicaServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Like uvicorn's, minus re-raising the signal at the end: exit hooks must run first."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.handle_exit)
        yield


async def _main(spec: wire.ReplicaSpec, assignment: wire.ReplicaAssignment) -> None:
    # Volumes first: the user's module may read them as it is imported.
    mounts = mount_volumes(spec, assignment.replica_id)
    try:
        prepared = await prepare(spec)
    except BaseException:
        mounts.unmount()
        raise
    await serve(prepared, assignment, mounts)


def run_serving_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run a replica's serving coroutine on uvloop where it is installed (uvicorn[standard] brings
    it; the server's own loop is uvloop too), else on asyncio's loop. Every token an LLM replica
    streams is a few loop callbacks, and uvloop's are about half the price."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def wait_for_network(assignment: wire.ReplicaAssignment) -> None:
    """In a sandbox, the backend connects our network namespace once we say we started."""
    if assignment.network_fd >= 0:
        report(assignment, wire.ReplicaStatus(state="started"))
        os.read(assignment.network_fd, 1)
        os.close(assignment.network_fd)


def boot() -> tuple[wire.ReplicaSpec, wire.ReplicaAssignment]:
    """What every replica (and template) process does first: read its two messages, die with
    its parent, adopt what its children leave (it kills it all when it ends: end_replica), wait
    for its network, and point nested calls at the server."""
    spec = wire.ReplicaSpec.model_validate_json(os.environ.pop(wire.SPEC_ENV))
    assignment = wire.ReplicaAssignment.model_validate_json(os.environ.pop(wire.ASSIGNMENT_ENV))
    die_with_parent()
    become_subreaper()
    wait_for_network(assignment)
    # Nested calls (`other_function.remote()` inside user code) reach the same server.
    os.environ["EMBER_SERVER_URL"] = spec.server_url
    os.environ["EMBER_TOKEN"] = assignment.token
    if spec.ca_cert:
        os.environ["EMBER_CA_CERT"] = spec.ca_cert
    return spec, assignment


def main() -> None:
    spec, assignment = boot()
    print(
        f"replica {assignment.replica_id} of {spec.app_name}.{spec.function.name} "
        f"(v{spec.version}) starting",
        flush=True,
    )
    try:
        run_serving_loop(_main(spec, assignment))
    except VolumeError as exc:  # a volume deleted since the deploy, say: the message says it all
        print(f"cannot mount volumes: {exc}", file=sys.stderr, flush=True)
        report(assignment, wire.ReplicaStatus(state="failed", message=str(exc)))
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - import errors and the like: print, then fail
        traceback.print_exc()
        report(assignment, wire.ReplicaStatus(state="failed", message=_describe(exc)))
        sys.exit(1)
    finally:  # after the @exit hooks: nothing the user's code started outlives the replica
        end_replica(assignment.replica_id)


if __name__ == "__main__":
    main()
