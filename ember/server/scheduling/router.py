"""Pick a ready replica with a free input slot for an input."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def ready(self) -> bool: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def last_active(self) -> float: ...


R = TypeVar("R", bound=Candidate)


def pick_replica(replicas: Iterable[R], max_inputs: int) -> R | None:
    """The least-loaded ready replica below `max_inputs`; ties go to the most recently active
    one, so load concentrates and spare replicas go idle and scale down."""
    best: R | None = None
    for replica in replicas:
        if not replica.ready or replica.in_flight >= max_inputs:
            continue
        if best is None or (replica.in_flight, -replica.last_active) < (
            best.in_flight,
            -best.last_active,
        ):
            best = replica
    return best
