"""The replica lifecycle, supervision and GPU placement, on a fake backend and a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ember.backends.base import Gpu
from ember.server.pools import Pool
from ember.server.replicas.state import IllegalTransition, Lifecycle, ReplicaRecord, ReplicaState
from ember.server.scheduling.queue import ReplicaStartupError
from tests.fakes.clock import FakeClock
from tests.fakes.http import Answer
from tests.unit.conftest import Harness, settle, until

S = ReplicaState


def test_moves_are_stamped_and_told_to_subscribers() -> None:
    clock = FakeClock()
    lifecycle = Lifecycle(clock)
    seen = []
    lifecycle.subscribe(seen.append)
    replica = lifecycle.create("r-1", ("app", 1, "f", ""))
    clock.advance(2.5)
    lifecycle.move(replica, S.STARTING)
    clock.advance(1.0)
    lifecycle.move(replica, S.READY, "reported ready")
    assert [(e.previous, e.state) for e in seen] == [
        (None, S.PENDING),
        (S.PENDING, S.STARTING),
        (S.STARTING, S.READY),
    ]
    assert [e.duration for e in seen[1:]] == [2.5, 1.0]
    assert seen[-1].reason == "reported ready"
    assert replica.since == clock.now and replica.last_active == clock.now


def test_an_illegal_move_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    lifecycle = Lifecycle(FakeClock())
    seen = []
    lifecycle.subscribe(seen.append)
    replica = lifecycle.create("r-1", ("app", 1, "f", ""))
    with caplog.at_level(logging.ERROR), pytest.raises(IllegalTransition):
        lifecycle.move(replica, S.READY)  # never started
    assert replica.state is S.PENDING and len(seen) == 1
    assert "r-1" in caplog.text and "pending -> ready" in caplog.text


def test_a_broken_subscriber_does_not_stop_the_others() -> None:
    lifecycle = Lifecycle(FakeClock())
    seen = []

    def broken(event: object) -> None:
        raise RuntimeError("boom")

    lifecycle.subscribe(broken)
    lifecycle.subscribe(seen.append)
    lifecycle.create("r-1", ("app", 1, "f", ""))
    assert len(seen) == 1


async def test_a_waiting_input_gets_the_replica_once_it_is_ready(harness: Harness) -> None:
    pool = harness.pool()
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await harness.scale()
    (replica,) = pool.replicas.values()
    assert replica.state is S.STARTING and not waiter.done()
    await harness.ready_all(pool)
    assert await waiter is replica and replica.in_flight == 1


async def test_gpu_replicas_never_outnumber_free_gpus(four_h100: Harness) -> None:
    h = four_h100
    pool = h.pool(gpu="H100", max_containers=10)
    waiters = [asyncio.ensure_future(pool.queue.acquire(timeout=60)) for _ in range(6)]
    await h.scale()
    starting = h.in_state(pool, S.STARTING)
    assert len(starting) == 4 and len(h.in_state(pool, S.PENDING)) == 2
    assert sorted(r.gpus for r in starting) == [(0,), (1,), (2,), (3,)]
    assert sorted(f.gpus for f in h.backend.replicas) == [[0], [1], [2], [3]]
    await h.ready_all(pool)
    assert sum(w.done() for w in waiters) == 4  # the other two wait; nothing failed
    # A replica that crashes frees its GPU at once, and a pending one takes it.
    crashed = waiters[0].result()
    h.fake(crashed).exit(-9)
    await settle()
    assert crashed.state is S.STOPPED and len(h.inventory.free_gpus()) == 1
    await h.scale()
    assert len(h.in_state(pool, S.STARTING)) == 1 and not h.inventory.free_gpus()


async def test_a_pool_with_waiters_and_no_replica_gets_the_next_gpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, gpus=[Gpu(0, "H100", "h"), Gpu(1, "H100", "h")])
    busy, other, idle = (
        h.pool("busy", gpu="H100"),
        h.pool("other", gpu="H100"),
        h.pool("idle", gpu="H100", scaledown_window=10.0),
    )
    idle_input = asyncio.ensure_future(idle.queue.acquire(timeout=60))
    busy_input = asyncio.ensure_future(busy.queue.acquire(timeout=60))
    await h.scale()
    await h.ready_all(idle)
    await h.ready_all(busy)
    idle.queue.release(await idle_input)
    await busy_input
    # `busy` wants a second replica (an input waits behind the first); it asked first.
    more_busy = asyncio.ensure_future(busy.queue.acquire(timeout=60))
    await h.scale()
    h.clock.advance(1)
    other_input = asyncio.ensure_future(other.queue.acquire(timeout=60))
    await h.scale()
    assert len(h.in_state(busy, S.PENDING)) == 1 and len(h.in_state(other, S.PENDING)) == 1
    h.clock.advance(60)  # `idle` scales down, freeing GPU 1
    await h.scale()
    await until(lambda: not idle.replicas)
    await h.scale()
    assert [r.gpus for r in h.in_state(other, S.STARTING)] == [(1,)]
    assert len(h.in_state(busy, S.PENDING)) == 1
    more_busy.cancel()
    other_input.cancel()


async def test_a_fallback_list_picks_the_type_present(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, gpus=[Gpu(0, "L4", "l4"), Gpu(1, "A100-80GB", "a100")])
    pool = h.pool(gpu=["H100", "A100-80GB", "L4"])
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await h.scale()
    assert [r.gpus for r in pool.replicas.values()] == [(1,)]
    waiter.cancel()


async def test_a_failed_start_fails_the_waiters_and_backs_off(harness: Harness) -> None:
    pool = harness.pool()
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await harness.scale()
    (replica,) = pool.replicas.values()
    await until(lambda: replica.handle)
    harness.logs.write("app", "f", replica.id, "ImportError: no module named torch")
    harness.fake(replica).fail("replica exited with code 1 during startup")
    with pytest.raises(ReplicaStartupError, match="no module named torch"):
        await waiter
    assert replica.state is S.STOPPED and not pool.replicas
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await harness.scale()
    assert not pool.replicas  # backing off
    harness.clock.advance(60)
    await harness.scale()
    assert len(pool.replicas) == 1
    waiter.cancel()


async def test_draining_waits_for_the_inputs_in_flight(harness: Harness) -> None:
    pool = harness.pool(scaledown_window=5.0)
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await harness.scale()
    await harness.ready_all(pool)
    replica = await waiter
    harness.supervisor.drain(replica, "test")
    await settle()
    assert replica.state is S.DRAINING and harness.fake(replica).stopped_with_grace is None
    pool.queue.release(replica)
    await until(lambda: replica.state is S.STOPPED)
    assert harness.fake(replica).stopped_with_grace == harness.settings.replica_graceful_shutdown
    assert [e.state for e in harness.events if e.replica is replica][-3:] == [
        S.DRAINING,
        S.STOPPING,
        S.STOPPED,
    ]


async def test_pending_replicas_are_dropped_first_when_demand_falls(four_h100: Harness) -> None:
    h = four_h100
    pool = h.pool(gpu="H100:4")
    waiters = [asyncio.ensure_future(pool.queue.acquire(timeout=60)) for _ in range(2)]
    await h.scale()
    assert len(h.in_state(pool, S.STARTING)) == 1 and len(h.in_state(pool, S.PENDING)) == 1
    waiters[1].cancel()
    await h.scale()
    assert not h.in_state(pool, S.PENDING)  # the one waiting for GPUs went, not the starting one
    waiters[0].cancel()


async def idle_replica(harness: Harness, pool: Pool) -> ReplicaRecord:
    """A ready replica of `pool` with no input."""
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await harness.scale()
    await harness.ready_all(pool)
    replica = await waiter
    pool.queue.release(replica)
    return replica


async def test_one_failed_health_check_does_not_replace_a_replica(harness: Harness) -> None:
    pool = harness.pool()
    replica = await idle_replica(harness, pool)
    answers = iter([503, 200, 503, 503, 503])
    harness.http.answer = lambda target, body: Answer(status=next(answers))
    for _ in range(4):
        await harness.supervisor.check_health(pool)
    assert replica.state is S.READY  # 503, 200, 503, 503: never three in a row
    await harness.supervisor.check_health(pool)
    assert replica.state is S.STOPPING
    assert all(fresh for _, _, fresh in harness.http.requests)  # probes on fresh connections


async def test_a_replica_that_took_an_input_during_the_check_is_not_replaced(
    harness: Harness,
) -> None:
    """The probe's D5: the check picks idle replicas, then probes them; one that took an input
    meanwhile is busy, not dead, whatever its probe said."""
    pool = harness.pool()
    replica = await idle_replica(harness, pool)
    harness.http.answer = lambda target, body: Answer(status=503)
    for _ in range(2):
        await harness.supervisor.check_health(pool)

    def busy_now(target: str, body: bytes) -> Answer:
        replica.take_slot()  # an input arrives while the probe is in flight
        return Answer(status=503)

    harness.http.answer = busy_now
    await harness.supervisor.check_health(pool)
    assert replica.state is S.READY and replica.in_flight == 1
