"""LogSink: replica output into the store, written behind in batches, with a tail per replica."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from ember.server.store.sql import SqlStore

TAIL_LINES = 30


class LogSink:
    def __init__(self, store: SqlStore, flush_interval: float = 0.2) -> None:
        self._store, self._interval = store, flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._tails: dict[str, deque[str]] = {}
        self._secrets: dict[str, set[str]] = {}
        self._task: asyncio.Task[None] | None = None

    def redact(self, app: str, secrets: Iterable[str]) -> None:
        """Hide these values wherever a replica of `app` prints them."""
        self._secrets.setdefault(app, set()).update(v for v in secrets if len(v) >= 4)

    def write(self, app: str, function: str, replica: str, text: str) -> None:
        for value in self._secrets.get(app, ()):
            text = text.replace(value, "****")
        self._buffer.append(
            {"ts": time.time(), "app": app, "function": function, "replica": replica, "text": text}
        )
        self._tails.setdefault(replica, deque(maxlen=TAIL_LINES)).append(text)

    def tail(self, replica: str) -> str:
        return "\n".join(self._tails.get(replica, ()))

    def forget(self, replica: str) -> None:
        self._tails.pop(replica, None)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if rows:
            await asyncio.to_thread(self._store.append_logs, rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()
