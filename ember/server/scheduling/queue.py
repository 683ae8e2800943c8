"""SlotQueue: a pool's inputs wait here, first come first served, for a free replica slot."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable

from ember.server.replicas.state import ReplicaRecord
from ember.server.scheduling.router import pick_replica


class QueueTimeout(Exception):
    """No replica slot became free within the wait limit."""


class ReplicaStartupError(Exception):
    """Every waiting input of a pool fails with this when a replica cannot start."""


class SlotQueue:
    """Hands out replica slots. A slot is held from `acquire` until `release`.

    Waiters are served when a slot frees up (`release`) or a replica becomes ready
    (`dispatch`, called on the lifecycle's READY event); `on_wait` wakes the autoscaler.
    """

    def __init__(
        self,
        replicas: Callable[[], Iterable[ReplicaRecord]],
        max_inputs: int,
        on_wait: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._replicas, self._max_inputs, self._on_wait = replicas, max_inputs, on_wait
        self._clock = clock
        self._waiters: deque[asyncio.Future[ReplicaRecord]] = deque()
        self._since: dict[asyncio.Future[ReplicaRecord], float] = {}  # in arrival order

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    def waiting_since(self) -> float | None:
        """When the input that has waited longest started waiting (None: nobody waits)."""
        return next((since for w, since in self._since.items() if not w.done()), None)

    async def acquire(self, timeout: float) -> ReplicaRecord:
        """A replica with a slot reserved for the caller; waits (and wakes the autoscaler)."""
        if not self.waiting:
            replica = pick_replica(self._replicas(), self._max_inputs)
            if replica is not None:
                replica.take_slot()
                return replica
        waiter: asyncio.Future[ReplicaRecord] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._since[waiter] = self._clock()
        waiter.add_done_callback(self._since.pop)
        self._on_wait()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException as exc:
            # Timed out or cancelled: a slot handed over in the meantime goes back.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(f"no replica became available within {timeout:.0f} s") from None
            raise

    def release(self, replica: ReplicaRecord) -> None:
        replica.free_slot(self._clock())
        self.dispatch()

    def dispatch(self) -> None:
        """Give free slots to waiters in arrival order."""
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            replica = pick_replica(self._replicas(), self._max_inputs)
            if replica is None:
                return
            replica.take_slot()
            self._waiters.popleft().set_result(replica)

    def fail_waiters(self, error: BaseException) -> None:
        """Fail everyone waiting (e.g. every replica failed to start)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
