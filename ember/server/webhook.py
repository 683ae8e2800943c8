"""Webhook: alerts POSTed as JSON to a URL the operator gave, in the background.

Each alert is one POST, bounded in time and never retried: a webhook that fails or hangs is
logged and never holds up serving (nothing waits on it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

log = logging.getLogger("ember.alerts")

TIMEOUT = 5.0


class Webhook:
    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url, self._timeout = url, timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, payload: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._post(payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, payload: dict[str, Any]) -> None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await asyncio.wait_for(
                    client.post(self.url, json=payload), self._timeout
                )
            response.raise_for_status()
        except (httpx.HTTPError, TimeoutError) as exc:
            log.warning("the alert webhook %s failed: %s", self.url, exc or type(exc).__name__)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
