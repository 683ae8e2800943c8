"""A server without metering (the benchmarks' setting, ServerSettings.metering): the same traffic
and replica moves as on a metered one leave no request tallies, no metered time and no usage, and
usage or budgets asked of it are refused with a message naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ember import wire
from ember.http1 import Http1Pool
from ember.resources import Resources
from ember.server.deployments import Deployments
from ember.server.logs import LogSink
from ember.server.observability import MeteringOff, Observability
from ember.server.pools import PoolKey, PoolRegistry
from ember.server.replicas.state import Lifecycle, ReplicaState
from ember.server.settings import NO_METERING_ENV, ServerSettings
from ember.server.store.async_store import AsyncStore
from ember.server.store.sql import SqlStore
from tests.fakes.clock import FakeClock

S = ReplicaState
REQUESTS = 'ember_requests_total{app="bench",function="echo",kind="web",status="200"} 1.0'
READY = 'ember_replicas{app="bench",function="echo",state="ready"} 1.0'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'ember.db'}")
    yield store
    store.close()


async def _traffic(tmp_path: Path, store: SqlStore, metering: bool) -> Observability:
    """An observability wired as the control plane wires it; one replica serves one request
    for 10 s of its 30 s of life, then stops."""
    clock = FakeClock()
    lifecycle = Lifecycle(clock)
    pools = PoolRegistry(on_wait=lambda: None, clock=clock)
    lifecycle.subscribe(pools.on_replica_event)
    shared = AsyncStore(store)

    async def no_secrets(*_: object) -> None:
        pass

    deployments = Deployments(
        shared, tmp_path / "apps", pools, no_secrets, lambda _: (Resources(), [])
    )
    spec = wire.FunctionSpec(name="echo")
    request = wire.DeployRequest(
        app_name="bench", declared_name="bench", module="m", functions=[spec]
    )
    await deployments.deploy(request)
    pool = pools.get_or_create(PoolKey("bench", 1, "echo", ""), spec, request, None, Resources())
    settings = ServerSettings(home=tmp_path, metering=metering)
    observability = Observability(
        settings, shared, pools, deployments, lifecycle, LogSink(store), Http1Pool(), {}
    )
    loops = await observability.start()
    replica = lifecycle.create(pool.new_replica_id(), pool.key)
    pool.replicas[replica.id] = replica
    lifecycle.move(replica, S.STARTING)
    lifecycle.move(replica, S.READY)
    observability.metrics.waited(pool, 0.001)
    observability.metrics.slot_held(replica, 1, 10.0)
    observability.metrics.request("bench", "echo", "web", 200, started=0.0)
    assert READY in observability.metrics.text().decode()  # read from the pools either way
    clock.advance(30.0)
    lifecycle.move(replica, S.STOPPED)
    for loop in loops:
        loop.cancel()
    await observability.stop()  # the last usage written
    return observability


async def test_a_metered_server_counts_what_an_unmetered_one_does_not(
    tmp_path: Path, store: SqlStore
) -> None:
    metered = await _traffic(tmp_path, store, metering=True)
    assert REQUESTS in metered.metrics.text().decode()
    totals = metered.meter.totals()[("bench", "echo")]
    assert (totals.replica_seconds, totals.inputs) == (30.0, 1)
    stored = sum(s["ended_at"] - s["started_at"] for s in store.segments(0))
    assert stored == pytest.approx(30.0)
    metered.require_metering()  # no error


async def test_an_unmetered_server_records_nothing_and_says_why(
    tmp_path: Path, store: SqlStore
) -> None:
    unmetered = await _traffic(tmp_path, store, metering=False)
    text = unmetered.metrics.text().decode()
    assert "ember_requests_total{" not in text and "ember_queue_wait_seconds_count{" not in text
    assert unmetered.meter.totals() == {}
    assert store.segments(0) == [] and store.input_usage("2000-01-01") == []
    with pytest.raises(MeteringOff) as refused:
        unmetered.require_metering()
    assert refused.value.status == 409
    assert f"without metering ({NO_METERING_ENV}=1" in refused.value.message
    assert f"restart `ember server` without {NO_METERING_ENV}" in refused.value.message
