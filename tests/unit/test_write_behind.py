"""WriteBehind against a store that fails: bounded retries, logged failures, a bounded buffer."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ember.server.store.base import Row
from ember.server.write_behind import MAX_ATTEMPTS, WriteBehind


class FlakyStore:
    """Fails the next `failures` writes, then stores every batch it is given."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[int]] = []

    def write(self, rows: list[Row]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        self.batches.append([row["n"] for row in rows])

    @property
    def written(self) -> list[int]:
        return [n for batch in self.batches for n in batch]


async def test_a_failed_batch_is_retried_before_newer_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(failures=2)
    buffer = WriteBehind(store.write, interval=60, what="log lines")
    buffer.append({"n": 1})
    await buffer.flush()
    buffer.append({"n": 2})
    await buffer.flush()
    assert store.written == []
    await buffer.flush()
    assert store.batches == [[1], [2]]  # the failed batch first, then the newer one
    assert buffer.dropped == 0
    assert "writing 1 log lines failed (attempt 1 of 5" in caplog.text
    assert "database is locked" in caplog.text


async def test_a_batch_that_keeps_failing_is_dropped_and_later_rows_are_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore(failures=MAX_ATTEMPTS)
    buffer = WriteBehind(store.write, interval=60)
    buffer.append({"n": 1})
    for _ in range(MAX_ATTEMPTS):
        await buffer.flush()
    assert buffer.dropped == 1
    assert f"dropped 1 rows after {MAX_ATTEMPTS} failed writes" in caplog.text
    buffer.append({"n": 2})
    await buffer.flush()
    assert store.written == [2]


async def test_a_full_buffer_drops_the_oldest_rows_with_a_counted_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    buffer = WriteBehind(store.write, interval=60, max_rows=3)
    for n in range(5):
        buffer.append({"n": n})
    assert buffer.dropped == 2
    with caplog.at_level(logging.WARNING):
        await buffer.flush()
    assert store.written == [2, 3, 4]
    assert "dropped the 2 oldest rows: the buffer was full (3)" in caplog.text


async def test_the_flush_loop_survives_failures_and_close_writes_the_rest() -> None:
    store = FlakyStore(failures=3)
    buffer = WriteBehind(store.write, interval=0.001)
    buffer.start()
    buffer.append({"n": 1})
    async with asyncio.timeout(30):
        while store.written != [1]:  # three failed flushes, then the loop writes it
            await asyncio.sleep(0.001)
    buffer.append({"n": 2})
    await buffer.close()
    assert store.written == [1, 2]
