"""History: the server's tallies sampled every few seconds for the last hour, for the dashboard.

Each sample keeps, per function, the running totals of ServerMetrics (requests, errors, the
latency histogram) and the replicas' time-to-first-token histogram; rates and percentiles are
the differences between two samples. Kept in memory: a restart starts the charts afresh.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ember.server.metrics import LATENCY, Histogram, ServerMetrics
from ember.server.replica_metrics import buckets

TTFT = "ember_llm_time_to_first_token_seconds"
KEEP = 720  # samples: an hour at 5 s


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0  # status 500 or more
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY))
    ttft: list[tuple[float, float]] = field(default_factory=list)  # cumulative buckets


@dataclass
class Sample:
    at: float
    functions: dict[tuple[str, str], Tally]
    replicas: dict[str, int]  # by state, every function together


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram given as cumulative (upper bound, count) buckets, as
    Prometheus' histogram_quantile estimates it; None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    rank, lower, below = q * cumulative[-1][1], 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


Buckets = list[tuple[float, float]]


def delta(new: Buckets, old: Buckets) -> Buckets:
    """What a cumulative histogram gained from `old` to `new`."""
    before = dict(old)
    return [(bound, count - before.get(bound, 0.0)) for bound, count in new]


class History:
    def __init__(self, metrics: ServerMetrics, keep: int = KEEP) -> None:
        self._metrics = metrics
        self.samples: deque[Sample] = deque(maxlen=keep)

    def sample(self, now: float) -> None:
        engine = self._metrics.replicas.merged()
        functions: dict[tuple[str, str], Tally] = {}
        for key, stats in self._metrics.stats.items():
            tally = functions[key] = Tally()
            for (_, status), count in stats.requests.items():
                tally.requests += count
                tally.errors += count if int(status) >= 500 else 0
            for histogram in stats.latency.values():
                for i, count in enumerate(histogram.counts):
                    tally.latency.counts[i] += count
        for key, families in engine.items():
            functions.setdefault(key, Tally()).ttft = buckets(families.get(TTFT), TTFT + "_bucket")
        replicas: dict[str, int] = {}
        for pool in self._metrics.pools:
            for state, n in pool.counts().items():
                replicas[state] = replicas.get(state, 0) + n
        self.samples.append(Sample(now, functions, replicas))

    async def run(self, interval: float, clock: Callable[[], float]) -> None:
        while True:
            self.sample(clock())
            await asyncio.sleep(interval)
