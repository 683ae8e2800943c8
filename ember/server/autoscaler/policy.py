"""The autoscaling decision: a pure function from a snapshot of one pool to replicas to add/stop."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaView:
    id: str
    starting: bool  # pending (waiting for a GPU) or starting: holds no input yet
    in_flight: int
    idle_since: float  # when its last input finished (or when it started)
    pending: bool = False  # still waiting for a GPU: costs nothing to drop


@dataclass(frozen=True)
class ScalingContext:
    in_flight: int
    queued: int
    replicas: tuple[ReplicaView, ...]
    min_containers: int
    max_containers: int
    buffer_containers: int
    max_inputs: int
    target_inputs: int | None
    scaledown_window: float
    current: bool  # False: an old version or a stopped app, which drains to zero
    can_start: bool  # False while backing off after failed starts
    now: float


@dataclass(frozen=True)
class ScalingDecision:
    start: int = 0
    stop: tuple[str, ...] = ()


def desired_replicas(ctx: ScalingContext) -> int:
    """Enough replicas for the inputs in flight and queued at `target_inputs` each, within
    [min_containers, max_containers], plus `buffer_containers` while there is demand.
    A pool that is no longer current (old version, stopped app) keeps only what its remaining
    inputs need."""
    demand = ctx.in_flight + ctx.queued
    per_replica = ctx.target_inputs or ctx.max_inputs
    wanted = math.ceil(demand / per_replica)
    if ctx.current:
        wanted = max(wanted, ctx.min_containers)
        if demand:
            wanted += ctx.buffer_containers
    return min(wanted, ctx.max_containers)


def decide(ctx: ScalingContext) -> ScalingDecision:
    desired = desired_replicas(ctx)
    current = len(ctx.replicas)
    if desired > current:
        return ScalingDecision(start=desired - current if ctx.can_start else 0)
    if desired == current:
        return ScalingDecision()
    # Replicas still waiting for a GPU go first; then only replicas that hold nothing, and in a
    # current pool only once they have been idle for the window.
    pending = [r for r in ctx.replicas if r.pending]
    idle = sorted(
        (
            r
            for r in ctx.replicas
            if r.in_flight == 0
            and not r.starting
            and (not ctx.current or ctx.now - r.idle_since >= ctx.scaledown_window)
        ),
        key=lambda r: r.idle_since,
    )
    if not ctx.current:
        idle += [r for r in ctx.replicas if r.starting and not r.pending]
    return ScalingDecision(stop=tuple(r.id for r in (pending + idle)[: current - desired]))
