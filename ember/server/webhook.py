"""Webhook: alerts POSTed as JSON to a URL the operator gave, in the background, in order.

Alerts wait in one queue and one sender posts them, one at a time, in the order they were sent
(80 % of a budget before 100 %). Each is one POST, bounded in time and never retried: a webhook
that fails or hangs is logged and delays only the alerts after it, never serving (nothing else
waits on it). At shutdown what is queued gets one timeout's worth of time to go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

log = logging.getLogger("ember.alerts")

TIMEOUT = 5.0
MAX_QUEUED = 1000  # alerts waiting behind a slow webhook; more are dropped (and logged)


class Webhook:
    def __init__(self, url: str, timeout: float = TIMEOUT) -> None:
        self.url, self._timeout = url, timeout
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(MAX_QUEUED)
        self._sender: asyncio.Task[None] | None = None

    def send(self, payload: dict[str, Any]) -> None:
        """Queue an alert (from the event loop); it goes out after those queued before it."""
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("the alert webhook %s is behind; dropped: %s", self.url, payload)
            return
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            while True:
                payload = await self._queue.get()
                await self._post(client, payload)
                self._queue.task_done()

    async def _post(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> None:
        try:
            response = await asyncio.wait_for(client.post(self.url, json=payload), self._timeout)
            response.raise_for_status()
        except Exception as exc:  # noqa: BLE001 - one bad alert must not stop the sender
            log.warning("the alert webhook %s failed: %s", self.url, exc or type(exc).__name__)

    async def close(self) -> None:
        """Send what is queued, for one timeout at most; then stop."""
        if self._sender is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), self._timeout)
        self._sender.cancel()
        await asyncio.gather(self._sender, return_exceptions=True)
