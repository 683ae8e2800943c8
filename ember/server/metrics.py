"""ServerMetrics: the server's Prometheus metrics, labelled by app and function only.

Recorded on the hot path into plain per-function tallies (one event loop: no locks): requests by
kind and status with their latency, waits for a replica slot, and the time inputs hold a slot
(handed to the meter for their GPU time). Cold starts by tier come from the lifecycle's events.
Read when scraped: replicas by state and queue depth (the pools), metered time and cost (the
meter), budgets, and what replicas measure themselves (replica_metrics.py).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ember import wire
from ember.server.deployments import Deployments
from ember.server.errors import ApiError
from ember.server.metering.meter import Meter
from ember.server.pools import Pool, PoolRegistry
from ember.server.replica_metrics import ReplicaMetrics
from ember.server.replicas.state import ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.scheduling.admission import Overloaded

S = ReplicaState
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
           60.0, 120.0, 300.0)  # fmt: skip
COLD_START = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
COLD = (S.STARTING, S.RESTORING)  # a replica ready from one of these ends a cold start
Key = tuple[str, str]  # (app, function)
LABELS = ["app", "function"]


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, then one past the last bound
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, float]]:
        """(upper bound, observations at or below it), +Inf last."""
        running, result = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            result.append((bound, float(running)))
        return result

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)


@dataclass
class FunctionStats:
    requests: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status)
    latency: dict[str, Histogram] = field(default_factory=dict)  # by kind
    queue_wait: Histogram = field(default_factory=lambda: Histogram(LATENCY))
    cold_starts: dict[str, Histogram] = field(default_factory=dict)  # by tier


class ServerMetrics:
    def __init__(
        self,
        pools: PoolRegistry,
        deployments: Deployments,
        meter: Meter,
        replicas: ReplicaMetrics,
        budgets: Callable[[], list[wire.BudgetInfo]],
    ) -> None:
        self.pools, self.deployments = pools, deployments
        self.meter, self.replicas, self._budgets = meter, replicas, budgets
        self.stats: dict[Key, FunctionStats] = {}
        self.errors: deque[tuple[float, str, str, str, int]] = deque(maxlen=50)  # the dashboard's
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _of(self, app: str, function: str) -> FunctionStats | None:
        """The function's tallies; None unless it is deployed (labels are never user input)."""
        stats = self.stats.get((app, function))
        if stats is None:
            deployment = self.deployments.find(app)
            if deployment is None or deployment.find(function) is None:
                return None
            stats = self.stats[(app, function)] = FunctionStats()
        return stats

    # -- recording (the hot path) ------------------------------------------------------------

    def request(self, app: str, function: str, kind: str, status: int, started: float) -> None:
        """A finished request; `started` is its `perf_counter()`. Unknown names are not kept."""
        stats = self._of(app, function)
        if stats is None:
            return
        key = (kind, str(status))
        stats.requests[key] = stats.requests.get(key, 0) + 1
        latency = stats.latency.get(kind)
        if latency is None:
            latency = stats.latency[kind] = Histogram(LATENCY)
        latency.observe(time.perf_counter() - started)
        if status >= 500 or status == 402:
            self.errors.append((time.time(), app, function, kind, status))

    def timed(self, app: str, function: str, kind: str) -> Timed:
        """`with metrics.timed(...) as timed:` records a request when the block ends: status 200,
        or what `timed.status` was set to, or what the exception that ended it means."""
        return Timed(self, app, function, kind)

    def waited(self, pool: Pool, seconds: float) -> None:
        stats = self._of(pool.key.app, pool.key.function)
        if stats is not None:
            stats.queue_wait.observe(seconds)

    def slot_held(self, replica: ReplicaRecord, inputs: int, seconds: float) -> None:
        self.meter.inputs(replica, inputs, seconds)

    def on_replica_event(self, event: ReplicaEvent) -> None:
        """A lifecycle subscriber: a replica that became ready ends a cold start."""
        if event.state is not S.READY or event.previous not in COLD:
            return
        app, _, function, _ = event.replica.pool
        stats = self._of(app, function)
        if stats is not None:
            tier = event.replica.tier  # fresh, fork or restore
            stats.cold_starts.setdefault(tier, Histogram(COLD_START)).observe(event.duration)

    # -- reading (a scrape) ------------------------------------------------------------------

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        ours = [*self._tallies(), *self._state(), *self._usage()]
        yield from ours
        names = {metric.name for metric in ours}  # a replica cannot pass for the server
        yield from (m for m in self.replicas.families() if m.name not in names)

    def _tallies(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "ember_requests", "Finished requests (web: HTTP status; call/map: the API's status).",
            labels=[*LABELS, "kind", "status"],
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "ember_request_duration_seconds", "Request latency at the server, queueing included.",
            labels=[*LABELS, "kind"],
        )  # fmt: skip
        wait = HistogramMetricFamily(
            "ember_queue_wait_seconds", "Time inputs waited for a replica slot.", labels=LABELS
        )
        cold = HistogramMetricFamily(
            "ember_cold_start_seconds", "Starts until ready, by tier (fresh, fork, restore).",
            labels=[*LABELS, "tier"],
        )  # fmt: skip
        for (app, function), stats in self.stats.items():
            for (kind, status), count in stats.requests.items():
                requests.add_metric([app, function, kind, status], count)
            for kind, histogram in stats.latency.items():
                _add(latency, [app, function, kind], histogram)
            if stats.queue_wait.count:
                _add(wait, [app, function], stats.queue_wait)
            for tier, histogram in stats.cold_starts.items():
                _add(cold, [app, function, tier], histogram)
        yield from (requests, latency, wait, cold)

    def _state(self) -> Iterator[Metric]:
        replicas = GaugeMetricFamily(
            "ember_replicas", "Replicas by state.", labels=[*LABELS, "state"]
        )
        queued = GaugeMetricFamily(
            "ember_queue_depth", "Inputs waiting for a replica slot.", labels=LABELS
        )
        counts: dict[tuple[str, str, str], int] = {}
        depth: dict[Key, int] = {}
        for pool in self.pools:
            key = (pool.key.app, pool.key.function)
            depth[key] = depth.get(key, 0) + pool.queue.waiting
            for state, n in pool.counts().items():
                counts[(*key, state)] = counts.get((*key, state), 0) + n
        for labels, n in counts.items():
            replicas.add_metric(list(labels), n)
        for key, n in depth.items():
            queued.add_metric(list(key), n)
        yield from (replicas, queued)

    def _usage(self) -> Iterator[Metric]:
        families = {
            "replica_seconds": CounterMetricFamily(
                "ember_replica_seconds", "Metered replica time (every billed state).", labels=LABELS
            ),
            "gpu_seconds": CounterMetricFamily(
                "ember_gpu_seconds", "Metered GPU time of replicas.", labels=LABELS
            ),
            "cost": CounterMetricFamily(
                "ember_cost_usd", "Metered cost of replicas, at the server's prices.", labels=LABELS
            ),
            "inputs": CounterMetricFamily(
                "ember_inputs", "Inputs and web requests that ran on a replica.", labels=LABELS
            ),
            "input_gpu_seconds": CounterMetricFamily(
                "ember_input_gpu_seconds", "Inputs' time on a replica x its GPUs.", labels=LABELS
            ),
        }
        for (app, function), totals in self.meter.totals().items():
            for name, family in families.items():
                family.add_metric([app, function], getattr(totals, name))
        budget = GaugeMetricFamily(
            "ember_budget_monthly_usd", "Monthly budgets (scope '*': the server).", labels=["scope"]
        )
        spent = GaugeMetricFamily(
            "ember_budget_spent_usd", "Spent this UTC month against each budget.", labels=["scope"]
        )
        for info in self._budgets():
            budget.add_metric([info.scope], info.monthly_usd)
            spent.add_metric([info.scope], info.spent_usd)
        yield from (*families.values(), budget, spent)


class Unrecorded(ServerMetrics):
    """The metrics of a server without metering (`settings.metering`, for benchmarks): nothing
    recorded per request or input; replicas by state and queue depth are still read when
    scraped."""

    def request(self, app: str, function: str, kind: str, status: int, started: float) -> None:
        pass

    def waited(self, pool: Pool, seconds: float) -> None:
        pass

    def slot_held(self, replica: ReplicaRecord, inputs: int, seconds: float) -> None:
        pass


class Timed:
    __slots__ = ("_metrics", "app", "function", "kind", "started", "status")

    def __init__(self, metrics: ServerMetrics, app: str, function: str, kind: str) -> None:
        self._metrics, self.app, self.function, self.kind = metrics, app, function, kind
        self.started, self.status = time.perf_counter(), 200

    def __enter__(self) -> Timed:
        return self

    def __exit__(self, _: object, exc: BaseException | None, __: object) -> None:
        status = self.status if exc is None else status_of(exc)
        self._metrics.request(self.app, self.function, self.kind, status, self.started)


def status_of(exc: BaseException) -> int:
    """The HTTP status a request that raised `exc` ends with."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, Overloaded):
        return 503
    return 499 if isinstance(exc, asyncio.CancelledError) else 500


def _add(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.total)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
