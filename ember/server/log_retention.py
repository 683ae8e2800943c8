"""LogRetention: each app's logs bounded in size; past the bound, its oldest lines go.

Sizes are kept per app and brought up to date from the lines written since the last check (ids
grow in the order lines are written), so a check reads only new lines; an app past its bound
loses its oldest lines, down to 90 % of it.
"""

from __future__ import annotations

import asyncio
import logging

from ember.server.store.base import Store

log = logging.getLogger("ember.server")

KEEP = 0.9  # of the bound, after a trim
INTERVAL = 30.0


class LogRetention:
    def __init__(self, store: Store, max_bytes: int) -> None:
        self._store, self._max = store, max_bytes
        self._sizes: dict[str, int] = {}
        self._after = 0  # the last line id counted

    def enforce(self) -> None:
        """Count new lines; trim apps past the bound (blocking: run it in a thread)."""
        added, self._after = self._store.log_sizes(self._after)
        for app, size in added.items():
            self._sizes[app] = self._sizes.get(app, 0) + size
        for app, size in self._sizes.items():
            if size > self._max:
                freed = self._store.trim_logs(app, size - int(self._max * KEEP))
                self._sizes[app] = size - freed
                log.info("logs of app %s: dropped the oldest %d bytes (keeping %d per app)",
                         app, freed, self._max)  # fmt: skip

    async def run(self, interval: float = INTERVAL) -> None:
        while True:
            try:
                await asyncio.to_thread(self.enforce)
            except Exception:  # a failing store: try again at the next check
                log.exception("trimming logs failed")
            await asyncio.sleep(interval)
