"""Budget alerts reach the webhook one at a time, in the order they fired, each once; one that
hangs is given up after the timeout and holds back only the alerts after it (a real HTTP
server on loopback records what arrives)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest

from ember.server.webhook import Webhook

TIMEOUT = 0.3  # the webhook's bound on one POST, short for the test


class Hook:
    """A webhook server that records events in order: an alert arriving, its connection closed
    by the sender. It never answers the alerts named in `hang`."""

    def __init__(self, hang: set[int]) -> None:
        self.hang, self.events = hang, asyncio.Queue[str]()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self.answer(reader, writer):
                pass
        except asyncio.IncompleteReadError:
            pass  # the sender closed its (kept-alive) connection
        finally:
            writer.close()

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length")
        )
        level = json.loads(await reader.readexactly(length))["level"]
        await self.events.put(f"{level} arrived")
        if level in self.hang:
            await reader.read()  # until the sender gives up and closes the connection
            await self.events.put(f"{level} given up")
            return False
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        return True

    async def next_events(self, count: int) -> list[str]:
        return [await asyncio.wait_for(self.events.get(), 10) for _ in range(count)]


@pytest.fixture
async def hanging_hook() -> AsyncIterator[tuple[Hook, str]]:
    hook = Hook(hang={80})
    server = await asyncio.start_server(hook.handle, "127.0.0.1", 0)
    yield hook, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/alerts"
    server.close()
    await server.wait_closed()


async def test_alerts_arrive_in_order_one_at_a_time_even_when_one_hangs(
    hanging_hook: tuple[Hook, str], caplog: pytest.LogCaptureFixture
) -> None:
    hook, url = hanging_hook
    webhook = Webhook(url, timeout=TIMEOUT)
    webhook.send({"event": "budget", "level": 80})  # back to back, as one budget check fires them
    webhook.send({"event": "budget", "level": 100})
    # The 100 % alert waits for the 80 % one to be done (given up on), then goes out once.
    assert await hook.next_events(3) == ["80 arrived", "80 given up", "100 arrived"]
    await webhook.close()
    assert hook.events.empty()
    assert f"the alert webhook {url} failed" in caplog.text


async def test_what_is_queued_at_shutdown_still_goes_out(
    hanging_hook: tuple[Hook, str], caplog: pytest.LogCaptureFixture
) -> None:
    hook, url = hanging_hook
    webhook = Webhook(url, timeout=TIMEOUT)
    for level in (50, 60, 70):
        webhook.send({"level": level})
    with caplog.at_level(logging.WARNING):
        await webhook.close()
    assert await hook.next_events(3) == ["50 arrived", "60 arrived", "70 arrived"]
    assert "failed" not in caplog.text
