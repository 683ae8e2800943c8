"""WriteBehind: rows buffered in memory and written to the store in batches, off the hot path.

A failed write is logged and its batch retried at the next flushes, at most `MAX_ATTEMPTS` times
(a batch the store keeps refusing must not block every later row); flushing goes on whatever
happens. The buffer is bounded: when the store cannot keep up, the oldest rows are dropped and
the drop is counted in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")  # what is written: a store record, a row

log = logging.getLogger("ember.server")

MAX_ATTEMPTS = 5
MAX_ROWS = 100_000


class WriteBehind(Generic[T]):
    def __init__(
        self,
        write: Callable[[list[T]], None],
        interval: float,
        what: str = "rows",
        max_rows: int = MAX_ROWS,
    ) -> None:
        self._write, self._interval, self._what, self._max_rows = write, interval, what, max_rows
        self._rows: deque[T] = deque()
        self._retry: list[T] = []  # the batch that failed last, written before newer rows
        self._attempts = 0
        self._unreported_drops = 0
        self.dropped = 0  # rows lost for good: the buffer overflowed or a batch kept failing
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def append(self, row: T) -> None:
        if len(self._rows) + len(self._retry) >= self._max_rows:
            if self._rows:
                self._rows.popleft()
            else:
                self._retry.pop(0)
            self._unreported_drops += 1
            self.dropped += 1
        self._rows.append(row)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the batch that failed last (if any), then what is buffered. Never raises."""
        async with self._lock:
            if self._unreported_drops:
                log.warning(
                    "dropped the %d oldest %s: the buffer was full (%d)",
                    self._unreported_drops,
                    self._what,
                    self._max_rows,
                )
                self._unreported_drops = 0
            if self._retry and not await self._write_batch(self._retry):
                return
            self._retry = []
            if self._rows:
                batch = list(self._rows)
                self._rows.clear()
                if not await self._write_batch(batch):
                    self._retry = batch

    async def _write_batch(self, batch: list[T]) -> bool:
        """True once written; False if it failed and is worth another attempt."""
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception as exc:  # noqa: BLE001 - any store failure: log it, keep flushing
            self._attempts += 1
            if self._attempts < MAX_ATTEMPTS:
                log.warning(
                    "writing %d %s failed (attempt %d of %d, retried at the next flush): %s",
                    len(batch),
                    self._what,
                    self._attempts,
                    MAX_ATTEMPTS,
                    exc,
                )
                return False
            log.error(
                "dropped %d %s after %d failed writes: %s",
                len(batch),
                self._what,
                MAX_ATTEMPTS,
                exc,
            )
            self.dropped += len(batch)
        self._attempts = 0
        return True

    async def close(self) -> None:
        """Stop the loop, then write what is left (with the same bounded retries)."""
        if self._task is not None:
            self._task.cancel()
        for _ in range(MAX_ATTEMPTS):
            await self.flush()
            if not (self._retry or self._rows):
                return
