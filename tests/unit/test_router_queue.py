"""Replica picking and the slot queue, without processes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ember.server.replicas.state import Lifecycle, ReplicaRecord, ReplicaState
from ember.server.scheduling.queue import QueueTimeout, SlotQueue
from ember.server.scheduling.router import pick_replica


@dataclass
class FakeReplica:
    name: str
    ready: bool = True
    in_flight: int = 0
    last_active: float = 0.0


def test_pick_least_loaded_ready_replica() -> None:
    replicas = [
        FakeReplica("busy", in_flight=2),
        FakeReplica("free", in_flight=0),
        FakeReplica("starting", ready=False),
    ]
    assert pick_replica(replicas, max_inputs=4).name == "free"  # type: ignore[union-attr]


def test_full_replicas_are_skipped() -> None:
    assert pick_replica([FakeReplica("full", in_flight=1)], max_inputs=1) is None


def test_ties_go_to_the_most_recently_active() -> None:
    replicas = [FakeReplica("a", last_active=1.0), FakeReplica("b", last_active=2.0)]
    assert pick_replica(replicas, max_inputs=1).name == "b"  # type: ignore[union-attr]


def ready_replica() -> ReplicaRecord:
    lifecycle = Lifecycle()
    replica = lifecycle.create("r", ("app", 1, "f", ""))
    lifecycle.move(replica, ReplicaState.STARTING)
    lifecycle.move(replica, ReplicaState.READY)
    return replica


async def test_waiters_are_served_in_order_when_a_slot_frees() -> None:
    replicas: list[ReplicaRecord] = []
    woken = []
    queue = SlotQueue(lambda: replicas, max_inputs=1, on_wait=lambda: woken.append(1))
    first = asyncio.ensure_future(queue.acquire(timeout=5))
    second = asyncio.ensure_future(queue.acquire(timeout=5))
    await asyncio.sleep(0)
    assert queue.waiting == 2 and woken  # the autoscaler was asked for a replica
    replica = ready_replica()
    replicas.append(replica)
    queue.dispatch()
    assert await first is replica
    assert not second.done() and not replica.idle.is_set()
    queue.release(replica)
    assert await second is replica


async def test_timeout_gives_no_slot() -> None:
    queue = SlotQueue(lambda: [], max_inputs=1, on_wait=lambda: None)
    with pytest.raises(QueueTimeout):
        await queue.acquire(timeout=0.01)
    assert queue.waiting == 0


async def test_failures_reach_every_waiter() -> None:
    queue = SlotQueue(lambda: [], max_inputs=1, on_wait=lambda: None)
    waiter = asyncio.ensure_future(queue.acquire(timeout=5))
    await asyncio.sleep(0)
    queue.fail_waiters(RuntimeError("could not start"))
    with pytest.raises(RuntimeError, match="could not start"):
        await waiter
