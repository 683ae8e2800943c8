"""The dashboard's one JSON document: apps, functions and replicas now; rates, latency, TTFT and
replicas over the last hour; cold starts by tier; cost today and this month against budgets;
recent errors and log lines."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ember.server.history import Sample, Tally, delta, quantile
from ember.server.store.base import AppRecord, Store

if TYPE_CHECKING:
    from ember.server.plane import ControlPlane

WINDOW = 60.0  # seconds: the per-function figures are over the last minute
LOG_LINES = 100


async def overview(plane: ControlPlane) -> dict[str, Any]:
    history = plane.observability.history
    samples = list(history.samples)
    today, month = plane.meter.costs()
    records = await plane.store.run(Store.list_apps)
    lines = await plane.store.run(Store.recent_logs, LOG_LINES)
    return {
        "now": plane.meter.now(),
        "apps": _apps(plane, records, samples),
        "series": _series(samples),
        "cold_starts": _cold_starts(plane),
        "costs": {
            "today": today,
            "month": month,
            "budgets": [b.model_dump() for b in plane.budgets.all()],
        },
        "errors": [
            {"at": at, "app": app, "function": function, "kind": kind, "status": status}
            for at, app, function, kind, status in reversed(plane.metrics.errors)
        ],
        "logs": [line.model_dump() for line in lines],
    }


def _apps(
    plane: ControlPlane, records: list[AppRecord], samples: list[Sample]
) -> list[dict[str, Any]]:
    recent = _window(samples)
    now = plane.lifecycle.clock()
    apps = []
    for record in records:
        deployment = plane.deployments.find(record.name)
        names = [f.name for f in deployment.request.functions] if deployment else []
        functions = []
        for name in names:
            pools = [p for p in plane.pools.for_app(record.name) if p.key.function == name]
            replicas = [
                {
                    "id": r.id,
                    "state": r.state.value,
                    "for_s": round(now - r.since, 1),
                    "in_flight": r.in_flight,
                    "gpus": list(r.gpus),
                    "version": p.key.version,
                }
                for p in pools
                for r in p.replicas.values()
            ]
            stats = plane.metrics.stats.get((record.name, name))
            functions.append(
                {
                    "requests": sum(stats.requests.values()) if stats else 0,
                    "name": name,
                    "replicas": replicas,
                    "queued": sum(p.queue.waiting for p in pools),
                    **recent.get((record.name, name), {}),
                }
            )
        apps.append(
            {
                "name": record.name,
                "state": record.state,
                "version": record.version,
                "functions": functions,
            }
        )
    return apps


def _window(samples: list[Sample]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per function, over the last minute: request rate, error rate, latency and TTFT."""
    if len(samples) < 2:
        return {}
    last = samples[-1]
    first = next((s for s in samples if last.at - s.at <= WINDOW), samples[0])
    if first is last:
        first = samples[-2]
    return {
        key: _figures(tally, first.functions.get(key, Tally()), last.at - first.at)
        for key, tally in last.functions.items()
    }


def _figures(new: Tally, old: Tally, seconds: float) -> dict[str, Any]:
    latency = delta(new.latency.cumulative(), old.latency.cumulative())
    ttft = delta(new.ttft, old.ttft)
    return {
        "rate": (new.requests - old.requests) / seconds if seconds > 0 else 0.0,
        "error_rate": (new.errors - old.errors) / seconds if seconds > 0 else 0.0,
        "p50": quantile(0.5, latency),
        "p95": quantile(0.95, latency),
        "ttft_p50": quantile(0.5, ttft),
    }


def _series(samples: list[Sample]) -> dict[str, list[Any]]:
    """Server-wide, one point per sample: rates, latency and TTFT percentiles, replicas."""
    series: dict[str, list[Any]] = {
        k: [] for k in ("t", "rate", "errors", "p50", "p95", "ttft_p50", "ready", "starting")
    }
    for old, new in itertools.pairwise(samples):
        figures = _figures(_sum(new), _sum(old), new.at - old.at)
        series["t"].append(new.at)
        series["rate"].append(figures["rate"])
        series["errors"].append(figures["error_rate"])
        for name in ("p50", "p95", "ttft_p50"):
            series[name].append(figures[name])
        series["ready"].append(new.replicas.get("ready", 0))
        series["starting"].append(new.replicas.get("starting", 0) + new.replicas.get("pending", 0))
    return series


def _sum(sample: Sample) -> Tally:
    total = Tally()
    ttft: dict[float, float] = {}
    for tally in sample.functions.values():
        total.requests += tally.requests
        total.errors += tally.errors
        for i, count in enumerate(tally.latency.counts):
            total.latency.counts[i] += count
        for bound, observed in tally.ttft:
            ttft[bound] = ttft.get(bound, 0.0) + observed
    total.ttft = sorted(ttft.items())
    return total


def _cold_starts(plane: ControlPlane) -> list[dict[str, Any]]:
    rows = []
    for (app, function), stats in plane.metrics.stats.items():
        for tier, histogram in stats.cold_starts.items():
            rows.append(
                {
                    "app": app,
                    "function": function,
                    "tier": tier,
                    "count": histogram.count,
                    "mean_s": histogram.total / histogram.count if histogram.count else None,
                    "p50_s": quantile(0.5, histogram.cumulative()),
                }
            )
    return rows
