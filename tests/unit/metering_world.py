"""A meter on a fake clock over a store in memory (or a file, to 'restart' on): replicas moved
by hand through the lifecycle, no processes."""

from __future__ import annotations

from ember import wire
from ember.resources import Resources
from ember.server.metering.meter import Meter
from ember.server.metering.prices import PriceTable
from ember.server.pools import Pool, PoolKey, PoolRegistry
from ember.server.replicas.state import Lifecycle, ReplicaRecord, ReplicaState
from ember.server.store.sql import SqlStore
from tests.fakes.clock import FakeClock

S = ReplicaState
WALL = 1_795_000_000.0  # 2026-11-18, a Wednesday, mid-month (UTC)
GPU_TYPES = {0: "H100", 1: "H100", 2: "A10G"}


OPENED: list[SqlStore] = []  # every World's store, for close_worlds


def close_worlds() -> None:
    """Close the stores of the worlds a test made (a PostgreSQL connection left open warns)."""
    while OPENED:
        OPENED.pop().close()


class World:
    def __init__(self, url: str, prices: PriceTable | None = None) -> None:
        """`url`: a SQLite file (writes happen in a thread: an in-memory database would be
        another one there)."""
        self.clock = FakeClock(now=100.0)
        self.lifecycle = Lifecycle(self.clock)
        self.pools = PoolRegistry(on_wait=lambda: None, clock=self.clock)
        self.lifecycle.subscribe(self.pools.on_replica_event)
        self.store = SqlStore(url)
        OPENED.append(self.store)
        self.meter = Meter(
            self.store, prices or PriceTable(), GPU_TYPES, self.pools.resources_of, self.clock,
            wall=lambda: WALL + self.clock.now - 100.0,
        )  # fmt: skip
        self.lifecycle.subscribe(self.meter.on_replica_event)

    def pool(self, function: str = "f", app: str = "app", **resources: object) -> Pool:
        spec = wire.FunctionSpec(name=function)
        deploy = wire.DeployRequest(app_name=app, declared_name=app, module="m", functions=[spec])
        return self.pools.get_or_create(
            PoolKey(app, 1, function, ""),
            spec,
            deploy,
            None,
            Resources(**resources),  # type: ignore[arg-type]
        )

    def replica(self, pool: Pool, gpus: tuple[int, ...] = ()) -> ReplicaRecord:
        replica = self.lifecycle.create(pool.new_replica_id(), pool.key)
        replica.gpus = gpus
        pool.replicas[replica.id] = replica
        return replica

    def run(self, replica: ReplicaRecord, starting: float, ready: float) -> None:
        """PENDING -> STARTING for `starting` s -> READY for `ready` s (left READY)."""
        self.lifecycle.move(replica, S.STARTING)
        self.clock.advance(starting)
        self.lifecycle.move(replica, S.READY)
        self.clock.advance(ready)
