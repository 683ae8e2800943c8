"""The autoscaler loop: sample every pool, `decide`, apply through the Supervisor, place.

Each step is idempotent and contained per pool. `trigger()` wakes the loop at once: the first
input of a scaled-to-zero function, and a replica that stops (its GPU may be what a pending
replica of another pool waits for), do not wait for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ember.server.autoscaler.policy import ReplicaView, ScalingContext, decide
from ember.server.pools import Pool, PoolRegistry
from ember.server.replicas.state import Lifecycle, ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.replicas.supervisor import Supervisor
from ember.server.settings import ServerSettings

log = logging.getLogger("ember.autoscaler")


def sample(pool: Pool, settings: ServerSettings, now: float, one_per_port: bool) -> ScalingContext:
    live = [r for r in pool.replicas.values() if r.live]
    spec = pool.spec
    max_containers = spec.max_containers or settings.default_max_containers
    if one_per_port and spec.web is not None and spec.web.kind == "web_server":
        max_containers = 1  # without network namespaces, replicas would share its port
    return ScalingContext(
        in_flight=sum(r.in_flight for r in live),
        queued=pool.queue.waiting,
        replicas=tuple(
            ReplicaView(
                r.id,
                starting=r.state is not ReplicaState.READY,
                in_flight=r.in_flight,
                idle_since=r.last_active,
                pending=r.state is ReplicaState.PENDING,
            )
            for r in live
        ),
        min_containers=spec.min_containers if pool.current else 0,
        max_containers=max_containers,
        buffer_containers=spec.buffer_containers,
        max_inputs=spec.max_inputs,
        target_inputs=spec.target_inputs,
        scaledown_window=spec.scaledown_window,
        current=pool.current,
        can_start=now >= pool.next_start_at and pool.starts_held is None,
        now=now,
    )


class Autoscaler:
    def __init__(
        self,
        settings: ServerSettings,
        pools: PoolRegistry,
        supervisor: Supervisor,
        lifecycle: Lifecycle,
        one_per_port: bool,
    ) -> None:
        self._settings, self._pools, self._supervisor = settings, pools, supervisor
        self._clock, self._one_per_port = lifecycle.clock, one_per_port
        self._wake = asyncio.Event()
        self._last_health_check = 0.0
        lifecycle.subscribe(self._on_event)

    def trigger(self) -> None:
        self._wake.set()

    def _on_event(self, event: ReplicaEvent) -> None:
        if event.state is ReplicaState.STOPPED:
            self.trigger()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.autoscale_interval)
            self._wake.clear()
            await self.update()

    async def update(self) -> None:
        now = self._clock()
        check_health = now - self._last_health_check >= self._settings.health_interval
        if check_health:
            self._last_health_check = now
        for pool in self._pools:
            try:
                self._apply(pool, now)
                if check_health:
                    await self._supervisor.check_health(pool)
            except Exception:
                log.exception("autoscaling %s failed", pool.key)
        try:
            self._supervisor.place(self._pools)
            self._supervisor.expire_parked(self._pools)
        except Exception:
            log.exception("placing pending replicas failed")

    def _restore_one(self, parked: list[ReplicaRecord]) -> bool:
        """Restore the first parked replica that can be (its GPU may be taken meanwhile)."""
        while parked:
            if self._supervisor.restore(parked.pop(0)):
                return True
        return False

    def _apply(self, pool: Pool, now: float) -> None:
        """Start what is missing by the fastest tier (a parked replica, else a new one, which
        the supervisor forks or starts fresh); park or drain what is not needed."""
        decision = decide(sample(pool, self._settings, now, self._one_per_port))
        parked = sorted(
            (r for r in pool.replicas.values() if r.state is ReplicaState.PARKED),
            key=lambda r: -r.since,  # the most recently parked first
        )
        for _ in range(decision.start):
            if not self._restore_one(parked):
                self._supervisor.add(pool)
        for replica_id in decision.stop:
            replica = pool.replicas.get(replica_id)
            if replica is None:
                continue
            if pool.current and pool.spec.gpu_snapshot:
                self._supervisor.park(replica, "idle")
            else:
                self._supervisor.drain(replica, "idle" if pool.current else "not current")
        if not pool.current:
            for replica in parked:
                self._supervisor.kill(replica, "not current")
            if not pool.replicas and not pool.queue.waiting:
                self._pools.remove(pool)
                self._supervisor.forget(pool)
