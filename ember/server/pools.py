"""Pools: the replicas of one function (of one app version, with one set of class parameters)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ember import wire
from ember.resources import Resources
from ember.server.replicas.state import ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.scheduling.queue import SlotQueue


class PoolKey(NamedTuple):
    app: str
    version: int
    function: str
    params: str  # encoded class parameters; "" for functions


@dataclass(eq=False)
class Pool:
    key: PoolKey
    spec: wire.FunctionSpec
    deploy: wire.DeployRequest
    source_dir: Path | None
    resources: Resources  # what each replica gets (a GPU request may have fallen back to none)
    queue: SlotQueue
    current: bool = True  # False once a newer version is deployed or the app is stopped
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    startup_failures: int = 0
    next_start_at: float = 0.0  # back-off after a replica failed to start
    last_failure: str | None = None
    starts_held: str | None = None  # why no replica may start now (a budget is spent)

    def new_replica_id(self) -> str:
        return f"r-{uuid.uuid4().hex[:10]}"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for replica in self.replicas.values():
            counts[replica.state.value] = counts.get(replica.state.value, 0) + 1
        return counts


class PoolRegistry:
    """Every pool the server knows, created on first use; routes replica events to their pool."""

    def __init__(self, on_wait: Callable[[], None], clock: Callable[[], float]) -> None:
        self._pools: dict[PoolKey, Pool] = {}
        self._on_wait, self._clock = on_wait, clock

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def get(self, key: tuple[str, int, str, str]) -> Pool | None:
        return self._pools.get(PoolKey(*key))

    def resources_of(self, key: tuple[str, int, str, str]) -> Resources | None:
        pool = self.get(key)
        return pool.resources if pool is not None else None

    def get_or_create(
        self,
        key: PoolKey,
        spec: wire.FunctionSpec,
        deploy: wire.DeployRequest,
        source_dir: Path | None,
        resources: Resources,
    ) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            replicas: dict[str, ReplicaRecord] = {}
            queue = SlotQueue(replicas.values, spec.max_inputs, self._on_wait, self._clock)
            pool = Pool(key, spec, deploy, source_dir, resources, queue, replicas=replicas)
            self._pools[key] = pool
        return pool

    def on_replica_event(self, event: ReplicaEvent) -> None:
        """A lifecycle subscriber: ready replicas take waiting inputs; stopped ones leave."""
        pool = self.get(event.replica.pool)
        if pool is None:
            return
        if event.state is ReplicaState.READY:
            pool.queue.dispatch()
        elif event.state is ReplicaState.STOPPED:
            pool.replicas.pop(event.replica.id, None)

    def for_app(self, app: str) -> list[Pool]:
        return [p for p in self._pools.values() if p.key.app == app]

    def retire(self, app: str, keep_version: int | None = None) -> None:
        """Old versions (or every version, on stop) drain and scale to zero."""
        for pool in self.for_app(app):
            if pool.key.version != keep_version:
                pool.current = False

    def remove(self, pool: Pool) -> None:
        self._pools.pop(pool.key, None)
