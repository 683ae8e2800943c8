"""Metrics replicas serve, summed per function: counters survive a replica's stop, gauges go
with it; 204 means 'none' and is not asked again; labels are the server's app and function."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ember.server.replica_metrics import ReplicaMetrics, buckets
from ember.server.replicas.state import ReplicaState
from tests.fakes.http import Answer, FakeHttp
from tests.unit.metering_world import World

S = ReplicaState
ENGINE = """# TYPE ember_llm_generation_tokens_total counter
ember_llm_generation_tokens_total {tokens}
# TYPE ember_llm_generation_tokens_created gauge
ember_llm_generation_tokens_created 1.7e9
# TYPE ember_llm_requests_running gauge
ember_llm_requests_running{{app="spoofed"}} {running}
# TYPE ember_llm_time_to_first_token_seconds histogram
ember_llm_time_to_first_token_seconds_bucket{{le="0.1"}} 1
ember_llm_time_to_first_token_seconds_bucket{{le="+Inf"}} 2
ember_llm_time_to_first_token_seconds_sum 0.3
ember_llm_time_to_first_token_seconds_count 2
"""


def _samples(metrics: ReplicaMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in metrics.families():
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_replicas_are_summed_and_a_stopped_one_keeps_its_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    world = World(f"sqlite:///{tmp_path / 'db'}")
    pool = world.pool("serve", app="llm")
    answers = {10: Answer(pieces=[ENGINE.format(tokens=5, running=1).encode()]),
               20: Answer(pieces=[ENGINE.format(tokens=7, running=2).encode()])}  # fmt: skip
    http = FakeHttp(lambda target, body: answers[20])
    metrics = ReplicaMetrics(world.pools, http)  # type: ignore[arg-type]
    world.lifecycle.subscribe(metrics.on_replica_event)
    first, second = world.replica(pool), world.replica(pool)
    for replica in (first, second):
        world.run(replica, starting=0, ready=1)
        replica.handle = type("Handle", (), {"host": "h", "port": 1})()  # type: ignore[assignment]
    http.answer = lambda target, body: answers[10]
    await metrics._collect_one(("llm", "serve"), first)
    http.answer = lambda target, body: answers[20]
    await metrics._collect_one(("llm", "serve"), second)

    labels = (("app", "llm"), ("function", "serve"))
    samples = _samples(metrics)
    assert samples[("ember_llm_generation_tokens_total", labels)] == 12
    assert samples[("ember_llm_requests_running", labels)] == 3  # its own "app" label replaced
    assert not any(name.endswith("_created") for name, _ in samples)
    merged = metrics.merged()[("llm", "serve")]
    ttft = merged["ember_llm_time_to_first_token_seconds"]
    assert buckets(ttft, "ember_llm_time_to_first_token_seconds_bucket") == [
        (0.1, 2.0),
        (float("inf"), 4.0),
    ]

    world.lifecycle.move(second, S.STOPPED)
    samples = _samples(metrics)
    assert samples[("ember_llm_generation_tokens_total", labels)] == 12  # never goes back
    assert samples[("ember_llm_requests_running", labels)] == 1  # its gauge went with it
    exported = text_string_to_metric_families(_exposition(metrics))  # what /metrics would say
    assert {f.name: f.type for f in exported}["ember_llm_generation_tokens"] == "counter"


def _exposition(metrics: ReplicaMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(type("Collector", (), {"collect": lambda self: metrics.families()})())
    return generate_latest(registry).decode()


async def test_a_replica_without_metrics_is_asked_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    world = World(f"sqlite:///{tmp_path / 'db'}")
    pool = world.pool()
    http = FakeHttp(lambda target, body: Answer(status=204))
    metrics = ReplicaMetrics(world.pools, http)  # type: ignore[arg-type]
    replica = world.replica(pool)
    world.run(replica, starting=0, ready=1)
    replica.handle = type("Handle", (), {"host": "h", "port": 1})()  # type: ignore[assignment]
    await metrics.collect()
    await metrics.collect()
    assert len(http.requests) == 1
    assert list(metrics.families()) == []
