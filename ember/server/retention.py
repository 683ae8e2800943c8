"""Retention: what the store keeps is bounded. Each app's logs by size (past the bound its oldest
lines go), and calls by age (a call's record, and a spawned call's input and output, go once it
has been finished for `--call-retention-days`).

Log sizes are kept per app and brought up to date from the lines written since the last check
(ids grow in the order lines are written), so a check reads only new lines; an app past its bound
loses its oldest lines, down to 90 % of it. Old calls go in batches, so that no one delete holds
the database for long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ember.server.store.base import Store

log = logging.getLogger("ember.server")

KEEP = 0.9  # of the log bound, after a trim
INTERVAL = 30.0
CALL_BATCH = 10_000


class Retention:
    def __init__(
        self,
        store: Store,
        max_log_bytes: int,
        call_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store, self._max, self._call_seconds, self._clock = (
            store, max_log_bytes, call_seconds, clock,
        )  # fmt: skip
        self._sizes: dict[str, int] = {}
        self._after = 0  # the last log line id counted

    def enforce(self) -> None:
        """Trim apps' logs past the bound and drop old calls (blocking: run it in a thread)."""
        self._trim_logs()
        self._drop_old_calls()

    def _trim_logs(self) -> None:
        added, self._after = self._store.log_sizes(self._after)
        for app, size in added.items():
            self._sizes[app] = self._sizes.get(app, 0) + size
        for app, size in self._sizes.items():
            if size > self._max:
                freed = self._store.trim_logs(app, size - int(self._max * KEEP))
                self._sizes[app] = size - freed
                log.info("logs of app %s: dropped the oldest %d bytes (keeping %d per app)",
                         app, freed, self._max)  # fmt: skip

    def _drop_old_calls(self) -> None:
        before, dropped = self._clock() - self._call_seconds, 0
        while (batch := self._store.delete_calls_finished_before(before, CALL_BATCH)) > 0:
            dropped += batch
        if dropped:
            log.info("calls: dropped %d finished more than %.0f days ago",
                     dropped, self._call_seconds / 86400)  # fmt: skip

    async def run(self, interval: float = INTERVAL) -> None:
        while True:
            try:
                await asyncio.to_thread(self.enforce)
            except Exception:  # a failing store: try again at the next check
                log.exception("trimming logs and old calls failed")
            await asyncio.sleep(interval)
