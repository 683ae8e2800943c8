"""A Backend whose replicas are futures the test resolves: ready, failed, exited."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ember import wire
from ember.backends.base import Capabilities, Gpu, ReplicaLaunch, ReplicaStartFailed


def _future() -> asyncio.Future:  # type: ignore[type-arg]
    return asyncio.get_running_loop().create_future()


@dataclass(eq=False)
class FakeReplica:
    launch: ReplicaLaunch
    ready: asyncio.Future[None] = field(default_factory=_future)
    exit_code: asyncio.Future[int] = field(default_factory=_future)
    stopped_with_grace: float | None = None
    host: str = "127.0.0.1"
    port: int = 1
    web_port: int | None = None
    pid: int | None = None

    @property
    def replica_id(self) -> str:
        return self.launch.assignment.replica_id

    @property
    def gpus(self) -> list[int]:
        return self.launch.assignment.gpus

    # What the test does to it.
    def become_ready(self) -> None:
        self.ready.set_result(None)

    def fail(self, why: str) -> None:
        self.ready.set_exception(ReplicaStartFailed(why))
        self.exit(1)

    def exit(self, code: int) -> None:
        if not self.exit_code.done():
            self.exit_code.set_result(code)

    # The ReplicaHandle protocol.
    tier: str = "fresh"

    async def wait_ready(self) -> wire.ReplicaStatus:
        await self.ready
        return wire.ReplicaStatus(state="ready", phases={"enter hooks": 0.5})

    async def wait(self) -> int:
        return await self.exit_code

    async def sync_logs(self) -> None:
        return


class FakeBackend:
    def __init__(self, gpus: list[Gpu] | None = None, cores: int = 4) -> None:
        self.gpus, self.cores = gpus or [], cores
        self.replicas: list[FakeReplica] = []
        self.started = asyncio.Event()  # set at each start
        self.checkpoints = True  # whether `park` checkpoints (a CUDA driver that can)
        self.restore_error: Exception | None = None
        self.parked_bytes = 1 << 30  # host memory each parked replica holds

    def capabilities(self) -> Capabilities:
        return Capabilities(
            tuple(self.gpus), self.cores, None, None, None, memory_bytes=8 * self.parked_bytes
        )

    async def start_replica(self, launch: ReplicaLaunch) -> FakeReplica:
        replica = FakeReplica(launch)
        self.replicas.append(replica)
        self.started.set()
        return replica

    async def stop_replica(self, handle: FakeReplica, grace: float) -> None:  # type: ignore[override]
        handle.stopped_with_grace = grace
        handle.exit(0)

    async def park(self, handle: FakeReplica) -> bool:  # type: ignore[override]
        return self.checkpoints

    async def restore(self, handle: FakeReplica) -> None:  # type: ignore[override]
        if self.restore_error is not None:
            raise self.restore_error

    def memory_bytes(self, handle: FakeReplica) -> int:  # type: ignore[override]
        return self.parked_bytes

    async def close(self) -> None:
        for replica in self.replicas:
            replica.exit(0)
