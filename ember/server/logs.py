"""LogSink: replica output into the store, written behind in batches, with a tail per replica.

Every line is redacted (ember/server/redaction.py) before it is stored or kept in a tail, with
the secret values of the line's app.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from ember.server.redaction import Redactor
from ember.server.store.base import Row, Store
from ember.server.write_behind import WriteBehind

TAIL_LINES = 30


class LogSink(WriteBehind[Row]):
    def __init__(self, store: Store, flush_interval: float = 0.2) -> None:
        super().__init__(store.append_logs, flush_interval, what="log lines")
        self._tails: dict[str, deque[str]] = {}
        self._redactors: dict[str, Redactor] = {}

    def redact(self, app: str, secrets: Iterable[str]) -> None:
        """Hide these values wherever a replica of `app` prints them."""
        self._redactors.setdefault(app, Redactor()).add(secrets)

    def write(self, app: str, function: str, replica: str, text: str) -> None:
        redactor = self._redactors.get(app)
        if redactor is not None:
            text = redactor.redact(text)
        self.append(
            {"ts": time.time(), "app": app, "function": function, "replica": replica, "text": text}
        )
        self._tails.setdefault(replica, deque(maxlen=TAIL_LINES)).append(text)

    def tail(self, replica: str) -> str:
        return "\n".join(self._tails.get(replica, ()))

    def forget(self, replica: str) -> None:
        self._tails.pop(replica, None)
