"""WriteBehind: rows buffered in memory and written to the store in batches, off the hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Rows = list[dict[str, Any]]


class WriteBehind:
    def __init__(self, write: Callable[[Rows], None], interval: float) -> None:
        self._write, self._interval = write, interval
        self._rows: Rows = []
        self._task: asyncio.Task[None] | None = None

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            await asyncio.to_thread(self._write, rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()
