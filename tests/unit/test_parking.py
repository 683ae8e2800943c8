"""Parking idle replicas and restoring them, on a fake backend and a fake clock."""

from __future__ import annotations

import asyncio

from ember.backends.base import CheckpointError, Gpu
from ember.server.pools import Pool
from ember.server.replicas.state import ReplicaRecord, ReplicaState
from tests.fakes.http import Answer
from tests.unit.conftest import Harness, settle, until

S = ReplicaState


async def serve_one(h: Harness, pool: Pool) -> ReplicaRecord:
    """An input that gets a replica (starting one, or restoring one) and finishes."""
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await h.scale()
    await h.ready_all(pool)
    await until(waiter.done)
    replica = waiter.result()
    pool.queue.release(replica)
    return replica


async def park_idle(h: Harness, pool: Pool) -> None:
    h.clock.advance(pool.spec.scaledown_window + 1)
    await h.scale()
    await until(lambda: h.in_state(pool, S.PARKED))


def hook_calls(h: Harness) -> list[str]:
    return [target for target, _, _ in h.http.requests if "/__ember/" in target]


async def test_an_idle_replica_parks_gives_back_its_gpu_and_comes_back(four_h100: Harness) -> None:
    h = four_h100
    pool = h.pool(gpu="H100", gpu_snapshot=True, scaledown_window=10.0)
    first = await serve_one(h, pool)
    await park_idle(h, pool)
    assert first.state is S.PARKED and first.checkpointed
    assert len(h.inventory.free_gpus()) == 4  # parked: its GPU is free for others
    assert hook_calls(h) == ["/__ember/park"]
    again = await serve_one(h, pool)
    assert again is first and first.tier == "restore"
    assert hook_calls(h) == ["/__ember/park", "/__ember/restore"]
    assert len(h.backend.replicas) == 1  # no new process
    assert len(h.inventory.free_gpus()) == 3


async def test_a_parked_replica_whose_gpu_was_taken_yields_to_a_new_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, gpus=[Gpu(0, "H100", "h"), Gpu(1, "H100", "h")])
    pool = h.pool("parks", gpu="H100", gpu_snapshot=True, scaledown_window=10.0)
    parked = await serve_one(h, pool)
    await park_idle(h, pool)
    other = h.pool("other", gpu="H100")
    taker = await serve_one(h, other)
    assert taker.gpus == parked.gpus  # the freed GPU was given to another pool
    served = await serve_one(h, pool)
    assert served is not parked and parked.state is S.PARKED and served.tier == "fresh"


async def test_without_a_checkpoint_a_parked_replica_keeps_its_gpu(four_h100: Harness) -> None:
    h = four_h100
    h.backend.checkpoints = False  # no CUDA driver checkpoint: asleep, context kept
    pool = h.pool(gpu="H100", gpu_snapshot=True, scaledown_window=10.0)
    replica = await serve_one(h, pool)
    await park_idle(h, pool)
    assert not replica.checkpointed and len(h.inventory.free_gpus()) == 3
    assert await serve_one(h, pool) is replica


async def test_a_park_hook_that_fails_stops_the_replica(harness: Harness) -> None:
    pool = harness.pool(gpu_snapshot=True, scaledown_window=10.0)
    replica = await serve_one(harness, pool)
    harness.http.answer = lambda target, body: Answer(status=500, pieces=[b"no"])
    harness.clock.advance(11)
    await harness.scale()
    await until(lambda: replica.state is S.STOPPED)
    assert "could not park" in harness.events[-2].reason


async def test_a_failed_restore_is_stopped_and_the_next_tier_serves(four_h100: Harness) -> None:
    h = four_h100
    pool = h.pool(gpu="H100", gpu_snapshot=True, scaledown_window=10.0)
    parked = await serve_one(h, pool)
    await park_idle(h, pool)
    h.backend.restore_error = CheckpointError("the driver refused")
    waiter = asyncio.ensure_future(pool.queue.acquire(timeout=60))
    await h.scale()
    await until(lambda: parked.state is S.STOPPED)
    assert h.supervisor.restore_failures == 1 and not waiter.done()
    await h.scale()  # the autoscaler's next step starts a new replica for the waiting input
    await h.ready_all(pool)
    served = await waiter
    assert served is not parked and served.tier == "fresh"


async def test_parked_replicas_beyond_the_bounds_are_stopped_oldest_first(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, gpus=[], max_parked=2)
    pools = [h.pool(f"f{i}", gpu_snapshot=True, scaledown_window=10.0) for i in range(3)]
    replicas = []
    for pool in pools:
        replicas.append(await serve_one(h, pool))
        await park_idle(h, pool)
    await h.scale()
    await until(lambda: replicas[0].state is S.STOPPED)
    assert [r.state for r in replicas[1:]] == [S.PARKED, S.PARKED]
    h.clock.advance(h.settings.park_for + 1)
    await h.scale()
    await until(lambda: all(r.state is S.STOPPED for r in replicas))


async def test_parked_replicas_hold_at_most_their_share_of_host_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path, gpus=[], parked_memory_fraction=0.25)  # 2 parked replicas' worth
    pools = [h.pool(f"f{i}", gpu_snapshot=True, scaledown_window=10.0) for i in range(3)]
    for pool in pools:
        await serve_one(h, pool)
        await park_idle(h, pool)
    await h.scale()
    await settle()
    parked = [r for pool in pools for r in h.in_state(pool, S.PARKED)]
    assert len(parked) == 2
