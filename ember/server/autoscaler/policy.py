"""The autoscaling decision: a pure function from a snapshot of one pool to replicas to add/stop."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaView:
    id: str
    starting: bool
    in_flight: int
    idle_since: float  # when its last input finished (or when it started)


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
    active: bool  # False: an old version or a stopped app, which drains to zero
    can_start: bool  # False while backing off after failed starts
    now: float


@dataclass(frozen=True)
class ScalingDecision:
    start: int = 0
    stop: tuple[str, ...] = ()


def desired_replicas(ctx: ScalingContext) -> int:
    """Enough replicas for the inputs in flight and queued at `target_inputs` each, within
    [min_containers, max_containers], plus `buffer_containers` while there is demand.
    An inactive pool (old version, stopped app) keeps only what its remaining inputs need."""
    demand = ctx.in_flight + ctx.queued
    per_replica = ctx.target_inputs or ctx.max_inputs
    wanted = math.ceil(demand / per_replica)
    if ctx.active:
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
    # Scale down only replicas that hold nothing; an active pool also waits out the window.
    idle = [
        r
        for r in ctx.replicas
        if r.in_flight == 0
        and not r.starting
        and (not ctx.active or ctx.now - r.idle_since >= ctx.scaledown_window)
    ]
    if not ctx.active:
        idle += [r for r in ctx.replicas if r.starting]
    idle.sort(key=lambda r: r.idle_since)
    return ScalingDecision(stop=tuple(r.id for r in idle[: current - desired]))
