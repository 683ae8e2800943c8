"""The thin sync face over the SDK's async core: one background loop, `.aio` for async callers.

Handle methods are written once, `async` (or returning an async generator); `@live` makes
`handle.remote(x)` block and `await handle.remote.aio(x)` await. Async generators become plain
generators on the sync face.
Every coroutine runs on the SDK's own loop thread, so the one httpx client is only used there.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The SDK's event loop, started on first use in a daemon thread."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ember-sdk", daemon=True).start()
            _loop = loop
        return _loop


def started_loop() -> asyncio.AbstractEventLoop | None:
    """The SDK's event loop if it was started and still runs, without starting it."""
    return _loop if _loop is not None and _loop.is_running() else None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the SDK loop and block for its result."""
    loop = background_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("blocking Ember call made from the SDK's own loop; use `.aio`")
    future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
    return future.result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` from any event loop by running it on the SDK loop."""
    loop = background_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


_END = object()


async def _next_or_end(agen: AsyncIterator[T]) -> Any:
    try:
        return await agen.__anext__()
    except StopAsyncIteration:
        return _END


def iterate_sync(agen: AsyncGenerator[T, Any]) -> Iterator[T]:
    """Drive an async generator that lives on the SDK loop from synchronous code. Leaving early
    (a `break`) closes it, so whatever it had under way stops."""
    try:
        while (item := run_sync(_next_or_end(agen))) is not _END:
            yield item
    finally:
        if not sys.is_finalizing():  # at exit the loop's thread is gone; waiting would hang
            run_sync(agen.aclose())


async def iterate_async(agen: AsyncGenerator[T, Any]) -> AsyncIterator[T]:
    """Drive an async generator that lives on the SDK loop from another event loop."""
    try:
        while (item := await run_async(_next_or_end(agen))) is not _END:
            yield item
    finally:
        await run_async(agen.aclose())


class _BoundLive:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self._fn(*args, **kwargs)
        if inspect.isasyncgen(result):
            return iterate_sync(result)
        return run_sync(result)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        result = self._fn(*args, **kwargs)
        if inspect.isasyncgen(result):
            return iterate_async(result)
        return run_async(result)


class live(Generic[T]):
    """Descriptor: `obj.method(...)` is sync, `obj.method.aio(...)` is async."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> live[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> _BoundLive: ...
    def __get__(self, obj: object | None, owner: type) -> Any:
        if obj is None:
            return self
        return _BoundLive(self._fn.__get__(obj, owner))
