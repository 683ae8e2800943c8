"""FunctionQueue: inputs wait here, first come first served, for a free replica slot."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ember.server.gateway.router import pick_replica

if TYPE_CHECKING:
    from ember.server.pools import Replica


class QueueTimeout(Exception):
    """No replica slot became free within the wait limit."""


class FunctionQueue:
    """Hands out replica slots. A slot is held from `acquire` until `release`."""

    def __init__(
        self,
        replicas: Callable[[], Iterable[Replica]],
        max_inputs: int,
        on_wait: Callable[[], None],
    ) -> None:
        self._replicas, self._max_inputs, self._on_wait = replicas, max_inputs, on_wait
        self._waiters: deque[asyncio.Future[Replica]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self, timeout: float) -> Replica:
        """A replica with a slot reserved for the caller; waits (and wakes the autoscaler)."""
        if not self.waiting:
            replica = pick_replica(self._replicas(), self._max_inputs)
            if replica is not None:
                replica.in_flight += 1
                return replica
        waiter: asyncio.Future[Replica] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
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

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        replica.last_active = time.monotonic()
        self.dispatch()

    def dispatch(self) -> None:
        """Give free slots to waiters in arrival order; call when a replica becomes ready."""
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            replica = pick_replica(self._replicas(), self._max_inputs)
            if replica is None:
                return
            replica.in_flight += 1
            self._waiters.popleft().set_result(replica)

    def fail_waiters(self, error: BaseException) -> None:
        """Fail everyone waiting (e.g. every replica failed to start)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
