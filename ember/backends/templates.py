"""A pool's template process, seen from the backend: fork requests out, fork and exit news in.

The template (runtime/template.py) is started like a replica, in its own sandbox, with one end of
a socket pair (SOCK_SEQPACKET: each message arrives whole). A fork request is a
`wire.ForkRequest` sent with three fds (the replica's listening socket, status pipe and log
pipe); the template answers with `wire.TemplateEvent`s: `forked` (the child's pid as the template
sees it) and, later, `exit_code` when the child is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ember import wire
from ember.backends.base import ReplicaStartFailed

if TYPE_CHECKING:
    from ember.backends.local import LocalReplica

TEMPLATE_GONE = -9  # the exit code of a forked replica whose template died


@dataclass(eq=False)
class LocalTemplate:
    process: LocalReplica  # the template's own process: its sandbox, logs, status, exit
    control: socket.socket  # non-blocking; one message per packet
    forked: dict[str, asyncio.Future[int]] = field(default_factory=dict)  # id -> its pid here
    exits: dict[str, asyncio.Future[int]] = field(default_factory=dict)  # id -> exit code
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listening: asyncio.Task[None] | None = None

    @classmethod
    async def attach(cls, process: LocalReplica, control: socket.socket) -> LocalTemplate:
        control.setblocking(False)
        template = cls(process, control)
        template.listening = asyncio.ensure_future(template._listen())
        return template

    async def wait_ready(self) -> wire.ReplicaStatus:
        """The template prepared the code (its snap hooks ran); ReplicaStartFailed if not."""
        return await self.process.wait_ready()

    async def fork(self, request: wire.ForkRequest, fds: list[int]) -> int:
        """Fork a replica; returns its pid on this host."""
        replica_id = request.assignment.replica_id
        loop = asyncio.get_running_loop()
        self.forked[replica_id] = loop.create_future()
        self.exits[replica_id] = loop.create_future()
        async with self.lock:  # one request (and its fds) at a time on the socket
            try:
                socket.send_fds(self.control, [request.model_dump_json().encode()], fds)
            except OSError as exc:
                raise ReplicaStartFailed(f"the template is gone: {exc}") from None
        try:
            inner = await self.forked[replica_id]
        finally:
            del self.forked[replica_id]
        return host_pid(self.process.pid, inner)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while message := await loop.sock_recv(self.control, 1 << 16):
                event = wire.TemplateEvent.model_validate_json(message)
                if event.forked is not None:
                    _settle(self.forked.get(event.replica_id), event.forked)
                elif event.exit_code is not None:
                    _settle(self.exits.pop(event.replica_id, None), event.exit_code)
        finally:  # the template is gone, and so are the replicas it forked
            for future in [*self.forked.values()]:
                if not future.done():
                    future.set_exception(ReplicaStartFailed("the template exited"))
            for future in [*self.exits.values()]:
                _settle(future, TEMPLATE_GONE)

    def close(self) -> None:
        if self.listening is not None:
            self.listening.cancel()
        self.control.close()


def _settle(future: asyncio.Future[int] | None, value: int) -> None:
    if future is not None and not future.done():
        future.set_result(value)


def host_pid(template_pid: int, inner: int) -> int:
    """The host pid of the template's child whose pid in the template's namespace is `inner`."""
    tasks = Path(f"/proc/{template_pid}/task").glob("*/children")  # the template forks in a thread
    for child in (pid for task in tasks for pid in task.read_text().split()):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{child}/status").read_text()
            ids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid"))
            if int(ids[-1]) == inner:
                return int(child)
    raise ReplicaStartFailed(f"the template forked pid {inner}, which is gone")
