"""LogSink: replica output into the store, written behind in batches, with a tail per replica."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from ember.server.store.sql import SqlStore
from ember.server.write_behind import WriteBehind

TAIL_LINES = 30


class LogSink(WriteBehind):
    def __init__(self, store: SqlStore, flush_interval: float = 0.2) -> None:
        super().__init__(store.append_logs, flush_interval, what="log lines")
        self._tails: dict[str, deque[str]] = {}
        self._secrets: dict[str, set[str]] = {}

    def redact(self, app: str, secrets: Iterable[str]) -> None:
        """Hide these values wherever a replica of `app` prints them."""
        self._secrets.setdefault(app, set()).update(v for v in secrets if len(v) >= 4)

    def write(self, app: str, function: str, replica: str, text: str) -> None:
        for value in self._secrets.get(app, ()):
            text = text.replace(value, "****")
        self.append(
            {"ts": time.time(), "app": app, "function": function, "replica": replica, "text": text}
        )
        self._tails.setdefault(replica, deque(maxlen=TAIL_LINES)).append(text)

    def tail(self, replica: str) -> str:
        return "\n".join(self._tails.get(replica, ()))

    def forget(self, replica: str) -> None:
        self._tails.pop(replica, None)
