"""The meter: seconds in each state priced by what a replica holds, checkpoints, recovery after a
crash (billed once), per-input GPU time, and the usage report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ember.server.metering.prices import DEFAULT_GPU, MIN_CPU, MIN_MEMORY_MIB, PriceTable
from ember.server.metering.usage import report
from ember.server.metering.windows import CostWindows, month_start
from ember.server.replicas.state import ReplicaState
from tests.unit.metering_world import WALL, World, close_worlds

S = ReplicaState
H100 = DEFAULT_GPU["H100"]


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    """The meter's store, in each dialect (tests/conftest.py: database_url)."""
    yield database_url
    close_worlds()


def _usage(world: World, by: str = "function", since: float = 0.0):  # type: ignore[no-untyped-def]
    segments = world.store.segments(since)
    inputs = world.store.input_usage("0000-00-00")
    return report(segments, inputs, since, world.meter.now(), by, {})  # type: ignore[arg-type]


async def test_each_state_is_billed_for_what_the_replica_holds(db: str) -> None:
    world = World(db, prices=PriceTable(cpu_core=0.0, memory_gib=0.0))
    pool = world.pool(gpu=None, cpu=2.0)
    replica = world.replica(pool, gpus=(0, 1))
    world.clock.advance(5)  # PENDING: waiting for GPUs costs nothing
    world.run(replica, starting=3, ready=10)
    world.lifecycle.move(replica, S.DRAINING)
    world.clock.advance(2)
    world.lifecycle.move(replica, S.STOPPING)
    world.clock.advance(1)
    world.lifecycle.move(replica, S.STOPPED)
    world.clock.advance(100)  # stopped: nothing more
    await world.meter.checkpoint()

    row = _usage(world).rows[0]
    assert row.seconds_by_state == {"starting": 3, "ready": 10, "draining": 2, "stopping": 1}
    assert row.replica_seconds == 16 and row.gpu_seconds == 32
    assert row.cost_usd == pytest.approx(32 * H100)


async def test_a_parked_replica_bills_host_memory_only(db: str) -> None:
    prices = PriceTable(cpu_core=1.0, memory_gib=0.5)
    world = World(db, prices=prices)
    pool = world.pool(cpu=4.0, memory=2048)
    replica = world.replica(pool, gpus=(0,))
    world.run(replica, starting=0, ready=10)
    world.lifecycle.move(replica, S.PARKING)
    replica.checkpointed = True  # the driver moved its GPU state to host memory
    world.lifecycle.move(replica, S.PARKED)
    world.clock.advance(100)
    await world.meter.checkpoint()

    by_state = {s["state"]: s for s in world.store.segments(0)}
    assert by_state["ready"]["rate"] == pytest.approx(H100 + 4 * 1.0 + 2 * 0.5)
    assert by_state["parked"]["rate"] == pytest.approx(2 * 0.5)  # no GPU, no cores
    assert by_state["parked"]["gpus"] == 0
    assert _usage(world).rows[0].cost_usd == pytest.approx(10 * (H100 + 5) + 100 * 1.0)


async def test_a_replica_parked_without_a_checkpoint_is_billed_for_its_gpu(db: str) -> None:
    world = World(db, prices=PriceTable(cpu_core=1.0, memory_gib=0.5))
    replica = world.replica(world.pool(cpu=4.0, memory=2048), gpus=(0,))
    world.run(replica, starting=0, ready=10)
    world.lifecycle.move(replica, S.PARKING)
    world.lifecycle.move(replica, S.PARKED)  # asleep, CUDA context kept: the GPU is still its
    await world.meter.checkpoint()
    parked = next(s for s in world.store.segments(0) if s["state"] == "parked")
    assert parked["gpus"] == 1 and parked["rate"] == pytest.approx(H100 + 4 * 1.0 + 2 * 0.5)


async def test_no_request_bills_modal_minimums(db: str) -> None:
    world = World(db)
    replica = world.replica(world.pool())
    world.run(replica, starting=0, ready=60)
    await world.meter.checkpoint()
    prices = PriceTable()
    expected = 60 * (MIN_CPU * prices.cpu_core + MIN_MEMORY_MIB / 1024 * prices.memory_gib)
    assert _usage(world).total.cost_usd == pytest.approx(expected)


async def test_a_crash_is_billed_up_to_the_last_checkpoint_once(db: str) -> None:
    url = db
    first = World(url)
    replica = first.replica(first.pool(), gpus=(0,))
    first.run(replica, starting=2, ready=8)
    await first.meter.checkpoint()  # 10 s written, the READY segment still open
    first.clock.advance(30)  # ...and the server dies without another checkpoint

    second = World(url)  # a new server process on the same store, 40 s after the first began
    second.clock.advance(40)
    second.meter.recover()
    second.meter.recover()  # recovering twice changes nothing
    usage = _usage(second)
    assert usage.total.replica_seconds == pytest.approx(10)
    assert usage.total.gpu_seconds == pytest.approx(10)
    # The recovered month's cost counts toward budgets, once.
    _, month = second.meter.costs()
    assert month["app"] == pytest.approx(usage.total.cost_usd)


async def test_inputs_carry_the_gpu_time_of_the_replica_they_ran_on(db: str) -> None:
    world = World(db)
    replica = world.replica(world.pool(), gpus=(0, 1))
    world.run(replica, starting=0, ready=1)
    world.meter.inputs(replica, 1, 3.0)
    world.meter.inputs(replica, 2, 1.0)
    await world.meter.checkpoint()
    row = _usage(world).rows[0]
    assert row.inputs == 3
    assert row.input_gpu_seconds == pytest.approx(8.0)
    assert row.input_gpu_cost_usd == pytest.approx(8.0 * H100)
    assert row.cost_per_input_usd == pytest.approx(row.cost_usd / 3)


async def test_a_failed_checkpoint_keeps_what_it_could_not_write(db: str) -> None:
    world = World(db)
    replica = world.replica(world.pool())
    world.run(replica, starting=1, ready=1)
    world.lifecycle.move(replica, S.STOPPED)
    world.meter.inputs(replica, 1, 0.5)  # stopped: not attributed to anyone
    save = world.store.save_segments
    world.store.save_segments = lambda rows: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    await world.meter.checkpoint()
    assert world.store.segments(0) == []
    world.store.save_segments = save  # type: ignore[method-assign]
    await world.meter.checkpoint()
    assert _usage(world).total.replica_seconds == pytest.approx(2)


def test_usage_by_day_splits_at_utc_midnight() -> None:
    midnight = 1_795_046_400.0  # 2026-11-19 00:00 UTC
    segment = {"app": "a", "function": "f", "state": "ready", "gpus": 1, "rate": 1.0,
               "started_at": midnight - 30, "ended_at": midnight + 90}  # fmt: skip
    by_day = report([segment], [], 0, midnight + 1000, "day", {})
    assert [(r.day, r.replica_seconds) for r in by_day.rows] == [
        ("2026-11-18", 30),
        ("2026-11-19", 90),
    ]
    clipped = report([segment], [], midnight, midnight + 60, "app", {})
    assert clipped.total.replica_seconds == 60 and clipped.rows[0].app == "a"


def test_cost_windows_start_afresh_each_month() -> None:
    windows = CostWindows(WALL)
    start = month_start(WALL)
    windows.add("a", lambda s, e: 5.0 if s <= start else 0.0)
    assert windows.totals(WALL, [])[1] == {"a": 5.0}
    windows.roll(start + 40 * 86400)  # into the next month
    assert windows.totals(start + 40 * 86400, []) == ({}, {})
