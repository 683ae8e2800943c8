"""AsyncStore: the store's operations awaited from the event loop, run on the store's own threads.

A query blocks its thread for as long as the database takes (about 0.1 ms on a local SQLite
file, a network round trip or more on PostgreSQL, up to the connect timeout while it is down), so
the event loop that streams every request never runs one. The threads are the store's alone:
asyncio's default executor also builds images and moves volume files, and a database that hangs
must not take those with it. A few of them, so that one slow operation (a long log read, a row
locked by another server) does not hold up the others; each takes a connection from the engine's
pool (SQLAlchemy keeps 5). Operations a coroutine awaits one after the other run in that order;
operations of different requests may run at once, as transactions of two servers may.

    record = await store.run(Store.get_app, name)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from ember.server.store.base import Store

P = ParamSpec("P")
T = TypeVar("T")

THREADS = 4


class AsyncStore:
    def __init__(self, store: Store, threads: int = THREADS) -> None:
        self.sync = store  # for callers already on a thread of their own (writes behind)
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="ember-store")

    async def run(
        self, operation: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The store's method named by `operation` (`Store.get_app`: this store's `get_app`,
        typed by the protocol), off the loop; what it raises is raised here."""
        method = getattr(self.sync, operation.__name__)
        call = functools.partial(method, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def close(self) -> None:
        """Wait for the operations asked already, then close the store."""
        self._threads.shutdown(wait=True)
        self.sync.close()
