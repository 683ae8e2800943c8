"""The replica lifecycle: its states, the legal moves between them, and the events of each move.

Every state change goes through `Lifecycle.move`, which refuses an illegal move (a bug: logged
with the replica, and raised), stamps the time, and hands a `ReplicaEvent` to every subscriber:
the slot queue (a replica became ready), the autoscaler (a GPU was freed), the server log, and
the meter. Nothing else writes `ReplicaRecord.state`.

    PENDING -> STARTING -> READY -> DRAINING -> STOPPING -> STOPPED
                              \\-> PARKING -> PARKED -> RESTORING -> READY

PENDING waits for resources (a free GPU); any state may fall to STOPPED when the process dies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ember.backends.base import ReplicaHandle

log = logging.getLogger("ember.replicas")


class ReplicaState(StrEnum):
    PENDING = "pending"  # waiting for the resources it asks for (a free GPU)
    STARTING = "starting"  # its process imports the code and runs the enter hooks
    READY = "ready"  # takes inputs
    DRAINING = "draining"  # takes no new inputs; stops once its in-flight inputs finish
    PARKING = "parking"  # asked to give back its GPU memory, then checkpointed
    PARKED = "parked"  # holds no GPU; restored on demand
    RESTORING = "restoring"
    STOPPING = "stopping"  # SIGTERM sent: exit hooks run
    STOPPED = "stopped"  # its process is gone and its resources are free


S = ReplicaState
MOVES: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.PENDING: frozenset({S.STARTING, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.STOPPING, S.STOPPED}),
    S.READY: frozenset({S.DRAINING, S.PARKING, S.STOPPING, S.STOPPED}),
    S.DRAINING: frozenset({S.STOPPING, S.STOPPED}),
    S.PARKING: frozenset({S.PARKED, S.STOPPING, S.STOPPED}),
    S.PARKED: frozenset({S.RESTORING, S.STOPPING, S.STOPPED}),
    S.RESTORING: frozenset({S.READY, S.STOPPING, S.STOPPED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}
# What counts toward a pool's size (a parked replica holds no GPU: it is not).
LIVE = frozenset({S.PENDING, S.STARTING, S.READY, S.RESTORING})


class IllegalTransition(Exception):
    """A move the lifecycle does not allow: a bug in the caller."""


@dataclass(eq=False)
class ReplicaRecord:
    """What the server knows of one replica. Its state changes only through `Lifecycle.move`."""

    id: str
    pool: tuple[str, int, str, str]  # (app, version, function, params): the pool's key
    state: ReplicaState
    since: float  # when it entered its state (the lifecycle's clock)
    created: float
    handle: ReplicaHandle | None = None
    gpus: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()
    in_flight: int = 0
    last_active: float = 0.0  # when its last input finished (or when it became ready)
    health_failures: int = 0  # consecutive
    tier: str = ""  # how it last became ready: "fresh", "fork" (from a template), "restore"
    phases: dict[str, float] = field(default_factory=dict)  # seconds: how it last started
    checkpointed: bool = False  # parked with its GPU state moved to host memory (GPU free)
    parked_bytes: int = 0  # host memory its processes held once parked (idle: it stays so)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while in_flight == 0
    exited: asyncio.Future[int] | None = None  # the exit code, once its process is gone

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def ready(self) -> bool:
        return self.state is ReplicaState.READY

    @property
    def live(self) -> bool:
        return self.state in LIVE

    def take_slot(self) -> None:
        self.in_flight += 1
        self.idle.clear()

    def free_slot(self, now: float) -> None:
        self.in_flight -= 1
        self.last_active = now
        if self.in_flight == 0:
            self.idle.set()


@dataclass(frozen=True)
class ReplicaEvent:
    replica: ReplicaRecord
    previous: ReplicaState | None  # None: the replica was just created
    state: ReplicaState
    at: float
    duration: float  # seconds spent in `previous`
    reason: str = ""


Subscriber = Callable[[ReplicaEvent], None]


class Lifecycle:
    """Creates replica records and moves them between states, telling every subscriber."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def create(self, replica_id: str, pool: tuple[str, int, str, str]) -> ReplicaRecord:
        now = self.clock()
        replica = ReplicaRecord(replica_id, pool, S.PENDING, since=now, created=now)
        self._emit(ReplicaEvent(replica, None, S.PENDING, now, 0.0))
        return replica

    def move(self, replica: ReplicaRecord, state: ReplicaState, reason: str = "") -> ReplicaEvent:
        previous = replica.state
        if state not in MOVES[previous]:
            message = f"replica {replica.id} of {replica.pool}: illegal move {previous} -> {state}"
            log.error("%s (%s)", message, reason or "no reason given")
            raise IllegalTransition(message)
        now = self.clock()
        event = ReplicaEvent(replica, previous, state, now, now - replica.since, reason)
        replica.state, replica.since = state, now
        if state is S.READY:
            replica.last_active = now
        self._emit(event)
        return event

    def _emit(self, event: ReplicaEvent) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("replica event subscriber %r failed on %s", subscriber, event)
