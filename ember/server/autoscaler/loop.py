"""The autoscaler loop: sample every pool, `decide`, apply through the ReplicaManager.

Each step is idempotent and contained per pool. `trigger()` wakes the loop at once, so the first
input of a scaled-to-zero function does not wait for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ember.server.autoscaler.policy import ReplicaView, ScalingContext, decide
from ember.server.lifecycle import ReplicaManager
from ember.server.pools import Pool, PoolRegistry, ReplicaState
from ember.server.settings import ServerSettings

log = logging.getLogger("ember.autoscaler")


def sample(pool: Pool, settings: ServerSettings, now: float) -> ScalingContext:
    live = [
        r for r in pool.replicas.values() if r.state in (ReplicaState.STARTING, ReplicaState.READY)
    ]
    spec = pool.spec
    max_containers = spec.max_containers or settings.default_max_containers
    if spec.web is not None and spec.web.kind == "web_server":
        max_containers = 1  # on one host, replicas of a web_server would share its port
    return ScalingContext(
        in_flight=sum(r.in_flight for r in live),
        queued=pool.queue.waiting,
        replicas=tuple(
            ReplicaView(r.id, r.state is ReplicaState.STARTING, r.in_flight, r.last_active)
            for r in live
        ),
        min_containers=spec.min_containers if pool.active else 0,
        max_containers=max_containers,
        buffer_containers=spec.buffer_containers,
        max_inputs=spec.max_inputs,
        target_inputs=spec.target_inputs,
        scaledown_window=spec.scaledown_window,
        active=pool.active,
        can_start=now >= pool.next_start_at,
        now=now,
    )


class Autoscaler:
    def __init__(
        self, settings: ServerSettings, pools: PoolRegistry, replicas: ReplicaManager
    ) -> None:
        self._settings, self._pools, self._replicas = settings, pools, replicas
        self._wake = asyncio.Event()
        self._last_health_check = 0.0

    def trigger(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.autoscale_interval)
            self._wake.clear()
            await self.update()

    async def update(self) -> None:
        now = time.monotonic()
        check_health = now - self._last_health_check >= self._settings.health_interval
        if check_health:
            self._last_health_check = now
        for pool in self._pools:
            try:
                self._apply(pool, now)
                if check_health:
                    await self._replicas.check_health(pool)
            except Exception:
                log.exception("autoscaling %s failed", pool.key)

    def _apply(self, pool: Pool, now: float) -> None:
        decision = decide(sample(pool, self._settings, now))
        for _ in range(decision.start):
            self._replicas.start(pool)
        for replica_id in decision.stop:
            replica = pool.replicas.get(replica_id)
            if replica is not None:
                self._replicas.stop(pool, replica)
        if not pool.active and not pool.replicas and not pool.queue.waiting:
            self._pools.remove(pool)
