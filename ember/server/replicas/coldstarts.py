"""Cold starts: how each replica became ready, by which tier, phase by phase.

A lifecycle subscriber: when a replica becomes READY from STARTING (tier "fresh" or "fork") or
from RESTORING (tier "restore"), its phases (queued, placement, process start or fork, imports,
snap and enter hooks, restore, wake, and what the user's code timed itself, such as an engine's
weight load) go to the server log and stay as the function's latest cold start (`ember app show`).
The first answer it gives adds "first response" (seconds after ready); the record is then written
to the store (or when the replica stops, if it never answered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ember import wire
from ember.server.replicas.state import Lifecycle, ReplicaEvent, ReplicaRecord, ReplicaState
from ember.server.store.base import Row, Store
from ember.server.write_behind import WriteBehind

log = logging.getLogger("ember.replicas")
S = ReplicaState


class ColdStarts(WriteBehind[Row]):
    def __init__(self, store: Store, lifecycle: Lifecycle) -> None:
        super().__init__(store.insert_cold_starts, 1.0, "cold starts")
        self._clock: Callable[[], float] = lifecycle.clock
        self._unanswered: dict[str, tuple[wire.ColdStart, float]] = {}  # replica -> (record, at)
        self.latest: dict[tuple[str, str], wire.ColdStart] = {}  # (app, function) -> record
        lifecycle.subscribe(self._on_event)

    def _on_event(self, event: ReplicaEvent) -> None:
        replica = event.replica
        if event.state is S.READY and event.previous in (S.STARTING, S.RESTORING):
            record = self._record(event)
            self.latest[(replica.pool[0], replica.pool[2])] = record
            self._unanswered[replica.id] = (record, event.at)
            log.info("%s", describe(replica, record))
        elif event.state is S.STOPPED and replica.id in self._unanswered:
            self._persist(replica, self._unanswered.pop(replica.id)[0])

    def _record(self, event: ReplicaEvent) -> wire.ColdStart:
        replica = event.replica
        if event.previous is S.RESTORING:
            seconds = event.duration
        else:  # from its creation, and what its first input waited before that
            seconds = event.at - replica.created + replica.phases.get("queued", 0.0)
        phases = {name: round(value, 4) for name, value in replica.phases.items()}
        return wire.ColdStart(
            replica=replica.id, tier=replica.tier, seconds=round(seconds, 4), phases=phases,
            at=time.time(),
        )  # fmt: skip

    def answered(self, replica: ReplicaRecord) -> None:
        """The replica began its first answer since it became ready: complete its record."""
        pending = self._unanswered.pop(replica.id, None)
        if pending is None:
            return
        record, ready_at = pending
        record.phases["first response"] = round(self._clock() - ready_at, 4)
        self._persist(replica, record)

    def _persist(self, replica: ReplicaRecord, record: wire.ColdStart) -> None:
        app, _, function, _ = replica.pool
        self.append({"app": app, "function": function, **record.model_dump()})


def describe(replica: ReplicaRecord, record: wire.ColdStart) -> str:
    app, version, function, _ = replica.pool
    where = f" on GPU {','.join(map(str, replica.gpus))}" if replica.gpus else ""
    phases = ", ".join(f"{name} {seconds:.3f}" for name, seconds in record.phases.items())
    return (
        f"replica {replica.id} of {app}.{function} (v{version}) ready{where}: "
        f"{record.tier} start in {record.seconds:.2f} s ({phases or 'no phases'})"
    )
