"""The autoscaling policy as a pure function: no processes, no clock."""

from __future__ import annotations

from dataclasses import replace

from ember.server.autoscaler.policy import ReplicaView, ScalingContext, decide, desired_replicas

BASE = ScalingContext(
    in_flight=0,
    queued=0,
    replicas=(),
    min_containers=0,
    max_containers=10,
    buffer_containers=0,
    max_inputs=1,
    target_inputs=None,
    scaledown_window=60.0,
    current=True,
    can_start=True,
    now=1000.0,
)


def idle(rid: str, since: float) -> ReplicaView:
    return ReplicaView(rid, starting=False, in_flight=0, idle_since=since)


def test_scale_from_zero_for_queued_inputs() -> None:
    assert decide(replace(BASE, queued=3)).start == 3


def test_target_inputs_divides_demand() -> None:
    ctx = replace(BASE, queued=10, max_inputs=8, target_inputs=4)
    assert desired_replicas(ctx) == 3


def test_bounds_and_buffer() -> None:
    assert desired_replicas(replace(BASE, queued=50, max_containers=4)) == 4
    assert desired_replicas(replace(BASE, min_containers=2)) == 2
    assert desired_replicas(replace(BASE, queued=1, buffer_containers=2)) == 3
    assert desired_replicas(replace(BASE, buffer_containers=2)) == 0  # no demand, no buffer


def test_idle_replicas_stop_only_after_the_window() -> None:
    replicas = (idle("old", since=900.0), idle("recent", since=990.0))
    assert decide(replace(BASE, replicas=replicas)).stop == ("old",)
    assert decide(replace(BASE, replicas=replicas, now=1100.0)).stop == ("old", "recent")


def test_busy_replicas_are_never_stopped() -> None:
    busy = ReplicaView("busy", starting=False, in_flight=1, idle_since=0.0)
    assert decide(replace(BASE, replicas=(busy,), in_flight=1)).stop == ()
    assert decide(replace(BASE, replicas=(busy,), in_flight=1, current=False)).stop == ()


def test_inactive_pool_drains_at_once_but_serves_its_queue() -> None:
    replicas = (idle("a", since=999.0),)
    assert decide(replace(BASE, replicas=replicas, current=False)).stop == ("a",)
    assert decide(replace(BASE, queued=1, current=False)).start == 1
    assert desired_replicas(replace(BASE, min_containers=3, current=False)) == 0


def test_backoff_blocks_starts() -> None:
    assert decide(replace(BASE, queued=2, can_start=False)).start == 0


def test_min_containers_kept_even_when_idle() -> None:
    replicas = (idle("a", since=0.0),)
    assert decide(replace(BASE, replicas=replicas, min_containers=1)).stop == ()
