"""A control plane's replica machinery on a fake backend and a fake clock: no processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ember import wire
from ember.backends.base import Gpu
from ember.resources import Resources
from ember.server.autoscaler.loop import Autoscaler
from ember.server.dispatch import Dispatcher
from ember.server.logs import LogSink
from ember.server.pools import Pool, PoolKey, PoolRegistry
from ember.server.replicas.launch import Launcher
from ember.server.replicas.placement import Inventory
from ember.server.replicas.state import Lifecycle, ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.replicas.supervisor import Supervisor
from ember.server.replicas.templates import Templates
from ember.server.settings import ServerSettings
from ember.server.store.sql import SqlStore
from tests.fakes.backend import FakeBackend, FakeReplica
from tests.fakes.clock import FakeClock
from tests.fakes.http import Answer, FakeHttp


class Harness:
    def __init__(self, home: Path, gpus: list[Gpu], **settings: Any) -> None:
        self.clock = FakeClock()
        self.backend = FakeBackend(gpus)
        self.settings = ServerSettings(home=home, replica_base_env={}, **settings)
        self.lifecycle = Lifecycle(self.clock)
        self.events: list[ReplicaEvent] = []
        self.lifecycle.subscribe(self.events.append)
        self.pools = PoolRegistry(on_wait=lambda: None, clock=self.clock)
        self.lifecycle.subscribe(self.pools.on_replica_event)
        self.store = SqlStore("sqlite://")
        self.logs = LogSink(self.store)
        launcher = Launcher(self.settings, self.logs, _token, _no_secrets, lambda spec: None)
        self.inventory = Inventory(tuple(gpus), tuple(range(4)))
        self.http = FakeHttp(lambda target, body: Answer(status=200))
        self.templates = Templates(self.backend, launcher)  # type: ignore[arg-type]
        self.supervisor = Supervisor(
            self.settings,
            self.backend,
            self.lifecycle,
            self.inventory,
            launcher,  # type: ignore[arg-type]
            self.logs,
            self.http,
            self.templates,  # type: ignore[arg-type]
        )
        self.autoscaler = Autoscaler(
            self.settings, self.pools, self.supervisor, self.lifecycle, one_per_port=False
        )
        self.dispatcher = Dispatcher(
            self.settings,
            self.supervisor,
            self.http,
            lambda replica: None,  # type: ignore[arg-type]
        )

    def pool(
        self, function: str = "f", gpu: str | list[str] | None = None, **options: object
    ) -> Pool:
        spec = wire.FunctionSpec(name=function, gpu=gpu, **options)  # type: ignore[arg-type]
        deploy = wire.DeployRequest(
            app_name="app", declared_name="app", module="m", functions=[spec]
        )
        return self.pools.get_or_create(
            PoolKey("app", 1, function, ""),
            spec,
            deploy,
            None,
            Resources.of(spec.gpu, spec.cpu, spec.memory),
        )

    def states(self, pool: Pool) -> dict[str, int]:
        return pool.counts()

    def fake(self, replica: ReplicaRecord) -> FakeReplica:
        assert isinstance(replica.handle, FakeReplica)
        return replica.handle

    def in_state(self, pool: Pool, state: ReplicaState) -> list[ReplicaRecord]:
        return [r for r in pool.replicas.values() if r.state is state]

    async def scale(self) -> None:
        """One autoscaler step (once waiting inputs are in line), then let the tasks it started
        run."""
        await settle()
        await self.autoscaler.update()
        await settle()

    async def ready_all(self, pool: Pool) -> None:
        await until(lambda: all(r.handle for r in self.in_state(pool, ReplicaState.STARTING)))
        for replica in self.in_state(pool, ReplicaState.STARTING):
            self.fake(replica).become_ready()
        await settle()


async def _token(app: str) -> str:
    return "token"


async def _no_secrets(spec: wire.FunctionSpec) -> dict[str, str]:
    return {}


async def settle(rounds: int = 20) -> None:
    """Let every task that can make progress do so (no wall-clock wait)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Callable[[], object], rounds: int = 1000) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path, gpus=[])


@pytest.fixture
def four_h100(tmp_path: Path) -> Harness:
    return Harness(tmp_path, gpus=[Gpu(i, "H100", "declared H100") for i in range(4)])
