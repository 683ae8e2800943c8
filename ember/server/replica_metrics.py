"""ReplicaMetrics: what replicas measure themselves (an LLM engine's TTFT, tokens, queues),
collected by the server and re-exported with the labels app and function.

Every `interval` the server asks each ready replica for `/__ember/metrics`, and a replica once
more as it starts draining: Prometheus text from the provider its code registered
(ember/runtime/metrics.py). A replica without one answers 204 and is not asked again. Samples
are summed over a function's replicas. Counters and histograms must not go backwards when a
replica stops, so a stopped replica's last values are kept and added to the live ones'
("retired"); its gauges go with it. Families named as the server's own
are not re-exported (metrics.py), and each family keeps at most MAX_SERIES label sets per
function.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ember.http1 import Http1Pool, HttpError
from ember.server.pools import PoolRegistry
from ember.server.replicas.state import ReplicaEvent, ReplicaRecord, ReplicaState

log = logging.getLogger("ember.metrics")

METRICS_PATH = "/__ember/metrics"
TIMEOUT = 2.0
MAX_SERIES = 200
CUMULATIVE = frozenset({"counter", "histogram", "summary"})
KEPT = CUMULATIVE | {"gauge", "unknown"}
ASKED = frozenset({ReplicaState.READY, ReplicaState.DRAINING})
OURS = ("app", "function")  # labels the server sets; a replica's own are replaced

Key = tuple[str, str]  # (app, function)
Series = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)


@dataclass
class Family:
    type: str
    documentation: str
    samples: dict[Series, float] = field(default_factory=dict)


Families = dict[str, Family]


def parse(text: str) -> Families:
    """The families of a replica's answer that can be summed over replicas."""
    families: Families = {}
    for metric in text_string_to_metric_families(text):
        if metric.type not in KEPT or metric.name.endswith("_created"):
            continue
        family = families.setdefault(metric.name, Family(metric.type, metric.documentation))
        for sample in metric.samples:
            if sample.name.endswith("_created") or "quantile" in sample.labels:
                continue  # creation times and a summary's quantiles do not add up
            if len(family.samples) >= MAX_SERIES:
                break
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in OURS))
            family.samples[(sample.name, labels)] = float(sample.value)
    return families


def merge(into: Families, source: Families, cumulative_only: bool = False) -> None:
    for name, family in source.items():
        if cumulative_only and family.type not in CUMULATIVE:
            continue
        target = into.setdefault(name, Family(family.type, family.documentation))
        for series, value in family.samples.items():
            if series in target.samples or len(target.samples) < MAX_SERIES:
                target.samples[series] = target.samples.get(series, 0.0) + value


class ReplicaMetrics:
    def __init__(self, pools: PoolRegistry, http: Http1Pool) -> None:
        self._pools, self._http = pools, http
        self._latest: dict[str, tuple[Key, Families]] = {}  # by replica id
        self._retired: dict[Key, Families] = {}
        self._silent: set[str] = set()  # replicas that serve no metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def on_replica_event(self, event: ReplicaEvent) -> None:
        """A lifecycle subscriber: a draining replica is asked once more (its last counts); a
        stopped one's counters are kept, its gauges dropped."""
        replica = event.replica
        if event.state is ReplicaState.DRAINING and replica.id not in self._silent:
            app, _, function, _ = replica.pool
            task = asyncio.ensure_future(self._collect_one((app, function), replica))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif event.state is ReplicaState.STOPPED:
            self._silent.discard(replica.id)
            latest = self._latest.pop(replica.id, None)
            if latest is not None:
                self._retire(*latest)

    def _retire(self, key: Key, families: Families) -> None:
        merge(self._retired.setdefault(key, {}), families, cumulative_only=True)

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.collect()

    async def collect(self) -> None:
        """Ask every ready replica for its metrics, at once."""
        asked = [
            (pool.key.app, pool.key.function, replica)
            for pool in self._pools
            for replica in pool.replicas.values()
            if replica.state in ASKED and replica.id not in self._silent and replica.handle
        ]
        await asyncio.gather(*(self._collect_one((a, f), r) for a, f, r in asked))

    async def _collect_one(self, key: Key, replica: ReplicaRecord) -> None:
        assert replica.handle is not None
        try:
            async with asyncio.timeout(TIMEOUT):
                response = await self._http.request(
                    "GET", replica.handle.host, replica.handle.port, METRICS_PATH
                )
                body = await response.read()
        except (HttpError, TimeoutError) as exc:
            log.debug("no metrics from replica %s: %s", replica.id, exc)
            return
        if response.status == 204:
            self._silent.add(replica.id)
            return
        if response.status != 200:
            return
        try:
            families = parse(body.decode(errors="replace"))
        except ValueError as exc:
            log.warning("replica %s served metrics that do not parse: %s", replica.id, exc)
            return
        if replica.state is ReplicaState.STOPPED:  # it stopped while we asked: its last counts
            self._retire(key, families)
        else:
            self._latest[replica.id] = (key, families)

    def merged(self) -> dict[Key, Families]:
        """Per function: the live replicas' families summed, plus what stopped ones counted."""
        result: dict[Key, Families] = {}
        for key, families in self._retired.items():
            merge(result.setdefault(key, {}), families)
        for key, families in self._latest.values():
            merge(result.setdefault(key, {}), families)
        return result

    def families(self) -> Iterator[Metric]:
        """Everything collected, as Prometheus families with the labels app and function."""
        exported: dict[str, Metric] = {}
        for (app, function), families in self.merged().items():
            for name, family in families.items():
                metric = exported.get(name)
                if metric is None:
                    metric = exported[name] = Metric(name, family.documentation, family.type)
                for (sample, labels), value in family.samples.items():
                    metric.add_sample(sample, {**dict(labels), "app": app, "function": function},
                                      value)  # fmt: skip
        yield from exported.values()


def buckets(family: Family | None, sample: str) -> list[tuple[float, float]]:
    """A summed histogram's cumulative buckets, (upper bound, count), in order."""
    if family is None:
        return []
    found: dict[float, float] = {}
    for (name, labels), value in family.samples.items():
        le = dict(labels).get("le")
        if name == sample and le is not None:
            found[float(le)] = found.get(float(le), 0.0) + value
    return sorted(found.items())
