"""Pools: the replicas of one function (of one app version, with one set of class parameters)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from ember import wire
from ember.server.gateway.queue import FunctionQueue


class ReplicaState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # takes no new inputs; stops once its in-flight inputs finish
    STOPPING = "stopping"


class PoolKey(NamedTuple):
    app: str
    version: int
    function: str
    params: str  # encoded class parameters; "" for functions


@dataclass(eq=False)
class Replica:
    id: str
    handle: Any  # the backend's ReplicaHandle
    state: ReplicaState = ReplicaState.STARTING
    in_flight: int = 0
    started_at: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY


@dataclass(eq=False)
class Pool:
    key: PoolKey
    spec: wire.FunctionSpec
    deploy: wire.DeployRequest
    source_dir: Path | None
    on_wait: InitVar[Callable[[], None]]  # wakes the autoscaler when an input starts waiting
    active: bool = True  # False once a newer version is deployed or the app is stopped
    replicas: dict[str, Replica] = field(default_factory=dict)
    startup_failures: int = 0
    next_start_at: float = 0.0  # back-off after a replica failed to start
    last_failure: str | None = None
    queue: FunctionQueue = field(init=False)

    def __post_init__(self, on_wait: Callable[[], None]) -> None:
        self.queue = FunctionQueue(lambda: self.replicas.values(), self.spec.max_inputs, on_wait)

    @property
    def max_inputs(self) -> int:
        return self.spec.max_inputs

    def new_replica_id(self) -> str:
        return f"r-{uuid.uuid4().hex[:10]}"

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for replica in self.replicas.values():
            counts[replica.state.value] = counts.get(replica.state.value, 0) + 1
        return counts


class PoolRegistry:
    """Every pool the server knows, created on first use."""

    def __init__(self, on_wait: Any) -> None:
        self._pools: dict[PoolKey, Pool] = {}
        self._on_wait = on_wait

    def __iter__(self) -> Any:
        return iter(list(self._pools.values()))

    def get_or_create(
        self,
        key: PoolKey,
        spec: wire.FunctionSpec,
        deploy: wire.DeployRequest,
        source_dir: Path | None,
    ) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = Pool(key, spec, deploy, source_dir, self._on_wait)
            self._pools[key] = pool
        return pool

    def for_app(self, app: str) -> list[Pool]:
        return [p for p in self._pools.values() if p.key.app == app]

    def deactivate(self, app: str, keep_version: int | None = None) -> None:
        """Old versions (or every version, on stop) drain and scale to zero."""
        for pool in self.for_app(app):
            if pool.key.version != keep_version:
                pool.active = False

    def remove(self, pool: Pool) -> None:
        self._pools.pop(pool.key, None)
