"""The token cache: answers from memory, rechecks the store off the loop once an entry is older
than its TTL (a revocation made through another server is refused within seconds), and keeps
serving the tokens it knows while the database is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ember.server.api.auth import TokenCache
from ember.server.store.async_store import AsyncStore
from ember.server.store.sql import SqlStore
from tests.fakes.clock import FakeClock

TTL = 2.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'ember.db'}")
    yield opened
    opened.close()


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Wait for the recheck running in a thread to land (no timing assumed)."""
    async with asyncio.timeout(10):
        while not await condition():
            await asyncio.sleep(0.01)


async def test_a_token_revoked_elsewhere_is_refused_once_its_entry_is_rechecked(
    store: SqlStore,
) -> None:
    clock = FakeClock()
    cache, plane = TokenCache(TTL, clock), SimpleNamespace(store=AsyncStore(store))
    created = store.create_token("ci", kind="endpoint", app="web")
    assert await cache.verify(plane, created.token) is not None  # type: ignore[arg-type]
    store.revoke_token(created.id)  # as another server sharing the database would
    assert await cache.verify(plane, created.token) is not None  # type: ignore[arg-type]  # fresh
    clock.advance(TTL + 0.1)

    async def refused() -> bool:
        return await cache.verify(plane, created.token) is None  # type: ignore[arg-type]

    await _until(refused)


async def test_known_tokens_keep_working_while_the_database_is_down(store: SqlStore) -> None:
    clock = FakeClock()
    cache, plane = TokenCache(TTL, clock), SimpleNamespace(store=AsyncStore(store))
    created = store.create_token("ci", kind="admin")
    assert await cache.verify(plane, created.token) is not None  # type: ignore[arg-type]
    asked: list[str] = []

    def unreachable(token: str) -> Any:
        asked.append(token)
        raise OSError("connection refused")

    store.verify_token = unreachable  # type: ignore[method-assign]
    clock.advance(TTL + 0.1)
    assert await cache.verify(plane, created.token) is not None  # type: ignore[arg-type]

    # Each recheck fails and the next request starts another, the token served all along.
    async def served_through_two_rechecks() -> bool:
        assert await cache.verify(plane, created.token) is not None  # type: ignore[arg-type]
        return len(asked) >= 2

    await _until(served_through_two_rechecks)
