"""Meter: every replica's time in each state, by what it holds, at a price per second.

A lifecycle subscriber: each move closes the replica's current segment and opens one for the new
state. PENDING (waiting for a GPU) and STOPPED cost nothing; PARKED and checkpointed holds host
memory only (parked without a checkpoint keeps its GPU, and is billed for it); every
other state is billed for the replica's GPUs, cores and memory. `checkpoint` (every
`meter_interval`) writes new and closed segments to the store, and moves the end of open ones to
now, so a server that dies is billed up to its last checkpoint, once: `recover` closes what it left
open. Times are the lifecycle's monotonic clock anchored to the wall clock once, so a segment lasts
exactly what the lifecycle saw.

`inputs` adds up the time inputs held a replica slot, times the GPUs the replica holds: the GPU
time, and so the cost, of each request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ember.resources import Resources
from ember.server.metering.prices import MIN_CPU, MIN_MEMORY_MIB, PriceTable
from ember.server.metering.windows import CostWindows, clipped, day_name
from ember.server.replicas.state import ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.store.base import Store

log = logging.getLogger("ember.meter")
S = ReplicaState

FREE = frozenset({S.PENDING, S.STOPPED})
Key = tuple[str, str]  # (app, function)


@dataclass
class Segment:
    """A stretch of one replica's time in one state, with what it held and its price then."""

    replica: str
    app: str
    version: int
    function: str
    state: str
    gpu_type: str | None
    gpus: int
    cpu: float
    memory_mib: int
    rate: float  # USD per second
    gpu_rate: float  # the GPUs' share of `rate`
    started_at: float
    ended_at: float
    open: bool = True
    id: str = field(default_factory=lambda: f"u-{uuid.uuid4().hex}")

    def cost(self, start: float, end: float) -> float:
        """The cost of the part of this segment between `start` and `end` (an open segment runs
        on to `end`)."""
        ended = end if self.open else self.ended_at
        return clipped(self.rate, self.started_at, ended, start, end)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id, "replica": self.replica, "app": self.app, "version": self.version,
            "function": self.function, "state": self.state, "gpu_type": self.gpu_type,
            "gpus": self.gpus, "cpu": self.cpu, "memory_mib": self.memory_mib, "rate": self.rate,
            "started_at": self.started_at, "ended_at": self.ended_at, "open": self.open,
        }  # fmt: skip


@dataclass
class Totals:
    """Since this server started, per function: what the Prometheus counters report."""

    replica_seconds: float = 0.0
    gpu_seconds: float = 0.0
    cost: float = 0.0
    inputs: int = 0
    input_gpu_seconds: float = 0.0


class Meter:
    def __init__(
        self,
        store: Store,
        prices: PriceTable,
        gpu_types: Mapping[int, str],
        resources_of: Callable[[tuple[str, int, str, str]], Resources | None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.prices, self._store = prices, store
        self._gpu_types, self._resources_of = gpu_types, resources_of
        self._clock, self._offset = clock, wall() - clock()
        self._open: dict[str, Segment] = {}  # by replica id
        self._closed: list[Segment] = []  # closed since the last checkpoint
        self._inputs: dict[Key, list[float]] = {}  # since the last checkpoint
        self._totals: dict[Key, Totals] = {}
        self._unpriced: set[str] = set()
        self.windows = CostWindows(self.now())
        self._lock = asyncio.Lock()

    def now(self) -> float:
        """Wall-clock time, on the lifecycle's clock."""
        return self._clock() + self._offset

    # -- recording ---------------------------------------------------------------------------

    def on_replica_event(self, event: ReplicaEvent) -> None:
        """A lifecycle subscriber: close the replica's segment, open the next one."""
        at = event.at + self._offset
        segment = self._open.pop(event.replica.id, None)
        if segment is not None:
            self._close(segment, at)
        if event.state not in FREE:
            self._open[event.replica.id] = self._segment(event.replica, event.state, at)

    def _segment(self, replica: ReplicaRecord, state: ReplicaState, at: float) -> Segment:
        app, version, function, _ = replica.pool
        resources = self._resources_of(replica.pool) or Resources()
        gpus = len(replica.gpus)
        gpu_type = self._gpu_types.get(replica.gpus[0]) if gpus else None
        cpu, memory = resources.cpu or MIN_CPU, resources.memory or MIN_MEMORY_MIB
        if state is S.PARKED and replica.checkpointed:  # its GPUs and cores are free, not memory
            gpus, cpu = 0, 0.0
        if gpu_type is not None and gpu_type not in (*self.prices.gpu, *self._unpriced):
            self._unpriced.add(gpu_type)
            log.warning("no price for GPU type %r: its time is metered at 0 USD", gpu_type)
        gpu_rate = self.prices.rate(gpu_type, gpus, 0.0, 0)
        return Segment(
            replica.id, app, version, function, state.value, gpu_type, gpus, cpu, memory,
            rate=self.prices.rate(gpu_type, gpus, cpu, memory), gpu_rate=gpu_rate,
            started_at=at, ended_at=at,
        )  # fmt: skip

    def _close(self, segment: Segment, at: float) -> None:
        segment.ended_at, segment.open = max(at, segment.started_at), False
        self._closed.append(segment)
        self.windows.roll(segment.ended_at)
        self.windows.add(segment.app, segment.cost)
        totals = self._totals.setdefault((segment.app, segment.function), Totals())
        seconds = segment.ended_at - segment.started_at
        totals.replica_seconds += seconds
        totals.gpu_seconds += seconds * segment.gpus
        totals.cost += seconds * segment.rate

    def inputs(self, replica: ReplicaRecord, count: int, seconds: float) -> None:
        """`count` inputs held a slot of `replica` for `seconds` together (the hot path)."""
        segment = self._open.get(replica.id)
        if segment is None:
            return
        key = (segment.app, segment.function)
        acc = self._inputs.get(key)
        if acc is None:
            acc = self._inputs[key] = [0, 0.0, 0.0, 0.0]
        acc[0] += count
        acc[1] += seconds
        acc[2] += seconds * segment.gpus
        acc[3] += seconds * segment.gpu_rate

    # -- reading -----------------------------------------------------------------------------

    def totals(self) -> dict[Key, Totals]:
        """Per function since this server started, open segments up to now included."""
        now = self.now()
        result = {key: Totals(**vars(t)) for key, t in self._totals.items()}
        for segment in self._open.values():
            totals = result.setdefault((segment.app, segment.function), Totals())
            seconds = max(0.0, now - segment.started_at)
            totals.replica_seconds += seconds
            totals.gpu_seconds += seconds * segment.gpus
            totals.cost += seconds * segment.rate
        return result

    def costs(self) -> tuple[dict[str, float], dict[str, float]]:
        """Cost per app today and this month (UTC), open segments up to now included."""
        now = self.now()
        self.windows.roll(now)
        return self.windows.totals(now, self._open.values())

    # -- the store ---------------------------------------------------------------------------

    def recover(self) -> None:
        """At start: close what a server that died left open, then read this month's costs."""
        left = self._store.close_open_segments()
        if left:
            log.info("closed %d usage segment(s) a previous server left open", left)
        self.windows = CostWindows(self.now())
        self.windows.load(self._store.segments(self.windows.month_start))

    async def checkpoint(self) -> None:
        """Write what changed since the last checkpoint; on failure, keep it for the next."""
        async with self._lock:
            now = self.now()
            for segment in self._open.values():
                segment.ended_at = now
            segments = [s.row() for s in self._closed] + [s.row() for s in self._open.values()]
            closed, self._closed = self._closed, []
            inputs, self._inputs = self._inputs, {}
            day = day_name(now)
            rows = [
                {"app": app, "function": function, "day": day, "inputs": int(acc[0]),
                 "seconds": acc[1], "gpu_seconds": acc[2], "gpu_cost": acc[3]}
                for (app, function), acc in inputs.items()
            ]  # fmt: skip
            try:
                await asyncio.to_thread(self._write, segments, rows)
            except Exception as exc:  # noqa: BLE001 - the store is down: keep it, try again
                log.warning("writing usage failed (kept for the next checkpoint): %s", exc)
                self._closed = closed + self._closed
                for key, acc in inputs.items():
                    self._merge_inputs(key, acc)
                return
            for key, acc in inputs.items():
                totals = self._totals.setdefault(key, Totals())
                totals.inputs += int(acc[0])
                totals.input_gpu_seconds += acc[2]

    def _write(self, segments: list[dict[str, Any]], inputs: list[dict[str, Any]]) -> None:
        if segments:
            self._store.save_segments(segments)
        if inputs:
            self._store.add_input_usage(inputs)

    def _merge_inputs(self, key: Key, acc: list[float]) -> None:
        mine = self._inputs.setdefault(key, [0, 0.0, 0.0, 0.0])
        for i, value in enumerate(acc):
            mine[i] += value

    async def run(self, interval: float, then: Callable[[], Awaitable[None]]) -> None:
        """A checkpoint every `interval` seconds, each followed by `then` (the budgets)."""
        while True:
            await asyncio.sleep(interval)
            await self.checkpoint()
            await then()

    async def close(self) -> None:
        """At shutdown (every replica stopped by now): end what is open, write everything."""
        now = self.now()
        for segment in list(self._open.values()):
            self._close(segment, now)
        self._open.clear()
        await self.checkpoint()
