"""The local backend: each replica is a `python -m ember.runtime.replica` process on this host."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

from ember.backends.base import LogCallback, ReplicaHandle, ReplicaLaunch


@dataclass(eq=False)
class LocalReplica:
    process: asyncio.subprocess.Process
    port: int
    log_pump: asyncio.Task[None] = field(repr=False)
    host: str = "127.0.0.1"

    async def wait(self) -> int:
        code = await self.process.wait()
        await self.log_pump  # the last lines (a traceback, say) reach the log first
        return code


class LocalBackend:
    """Replica processes in their own session, so a stop reaches their children too."""

    def __init__(self) -> None:
        self._replicas: set[LocalReplica] = set()

    async def start_replica(self, launch: ReplicaLaunch) -> LocalReplica:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        port = listener.getsockname()[1]
        settings = launch.settings.model_copy(update={"listen_fd": listener.fileno()})
        env = dict(
            os.environ, **launch.env, EMBER_REPLICA=settings.model_dump_json(), PYTHONUNBUFFERED="1"
        )
        try:
            process = await asyncio.create_subprocess_exec(
                launch.python or sys.executable,
                "-m",
                "ember.runtime.replica",
                env=env,
                pass_fds=(listener.fileno(),),
                start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=launch.cwd or settings.source_dir or None,
            )
        finally:
            listener.close()  # the child holds its own copy of the socket
        pump = asyncio.ensure_future(_pump_logs(process, launch.on_log))
        replica = LocalReplica(process, port, pump)
        self._replicas.add(replica)
        return replica

    async def stop_replica(self, handle: ReplicaHandle, grace: float) -> None:
        assert isinstance(handle, LocalReplica)
        process = handle.process
        if process.returncode is None:
            _signal_group(process, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                _signal_group(process, signal.SIGKILL)
                await process.wait()
        # Children the user's code started (e.g. `vllm serve`) go with it.
        _signal_group(process, signal.SIGKILL)
        self._replicas.discard(handle)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_replica(r, 10.0) for r in list(self._replicas)))


def _signal_group(process: asyncio.subprocess.Process, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


async def _pump_logs(process: asyncio.subprocess.Process, on_log: LogCallback) -> None:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        on_log(line.decode(errors="replace").rstrip("\n"))
