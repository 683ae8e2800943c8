"""Function and FunctionCall handles: `.remote`, `.spawn`, `.map` and friends.

Each operation is written once as a coroutine; `@live` gives it the sync face (`f.remote(x)`) and
the async one (`await f.remote.aio(x)`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ember import wire
from ember.sdk.client import Client
from ember.sdk.exceptions import InvalidError, OutputExpiredError
from ember.sdk.serialization import outcome_value, serialize
from ember.sdk.synchronizer import live

if TYPE_CHECKING:
    from ember.sdk.app import App

MAP_CHUNK = 500  # inputs per HTTP request of a .map; the server fans a chunk out over replicas
MAP_REQUESTS_IN_FLIGHT = 4
GET_POLL_SECONDS = 30.0  # one long-poll of FunctionCall.get


class Function:
    """A deployed function (or one method of a deployed class, bound to its parameters)."""

    def __init__(
        self,
        name: str,
        *,
        app: App | None = None,
        app_name: str | None = None,
        raw: Callable[..., Any] | None = None,
        spec: wire.FunctionSpec | None = None,
        method: str | None = None,
        params: str = "",
        local_call: Callable[..., Any] | None = None,
    ) -> None:
        self.name, self.spec, self._app, self._app_name = name, spec, app, app_name
        self._raw, self._method, self._params, self._local_call = raw, method, params, local_call

    def __repr__(self) -> str:
        target = f"{self.name}.{self._method}" if self._method else self.name
        return f"<ember.Function {target}>"

    @classmethod
    def from_name(cls, app_name: str, name: str) -> Function:
        """A handle on function `name` of the deployed app `app_name` (looked up on first call)."""
        return cls(name, app_name=app_name)

    def get_raw_f(self) -> Callable[..., Any]:
        if self._raw is None:
            raise InvalidError(f"{self!r} was looked up by name; its code is not available here")
        return self._raw

    def local(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function in this process, as plain Python."""
        if self._local_call is not None:
            return self._local_call(*args, **kwargs)
        return self.get_raw_f()(*args, **kwargs)

    # -- the async core -------------------------------------------------------------------

    def _path(self, action: str) -> str:
        app_name = self._app_name or (self._app.deployed_name if self._app else None)
        if app_name is None:
            raise InvalidError(
                f"{self!r} belongs to an app that is not running. Run it with `ember run app.py`, "
                "deploy it with `ember deploy app.py`, or wrap calls in `with app.run():`"
            )
        return f"/api/v1/apps/{app_name}/functions/{self.name}/{action}"

    async def _post_inputs(self, action: str, inputs: list[bytes]) -> bytes:
        """POST the inputs to the function's `action` endpoint; the response's body."""
        return await Client.from_settings().post(
            self._path(action),
            wire.pack_frames(inputs),
            headers={wire.PARAMS_HEADER: self._params, "Content-Type": wire.PICKLE_CONTENT_TYPE},
            params={"method": self._method} if self._method else None,
        )

    @live
    async def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Run remotely and return the result (or raise the remote exception)."""
        payload = serialize((args, kwargs), "the function's arguments")
        (frame,) = wire.unpack_frames(await self._post_inputs("call", [payload]))
        return outcome_value(frame)

    @live
    async def spawn(self, *args: Any, **kwargs: Any) -> FunctionCall:
        """Start remotely and return at once; the result is kept for `FunctionCall.get()`."""
        payload = serialize((args, kwargs), "the function's arguments")
        response = await self._post_inputs("spawn", [payload])
        return FunctionCall(wire.SpawnResponse.model_validate_json(response).call_id)

    @live
    def map(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncGenerator[Any, None]:
        """Run over zipped inputs in parallel; yields results (in input order by default)."""
        arg_tuples = zip(*iterables, strict=False)
        return self._map_args(arg_tuples, kwargs or {}, order_outputs, return_exceptions)

    @live
    def starmap(
        self,
        input_iterator: Iterable[tuple[Any, ...]],
        *,
        kwargs: dict[str, Any] | None = None,
        order_outputs: bool = True,
        return_exceptions: bool = False,
    ) -> AsyncGenerator[Any, None]:
        """Like `map`, with each item unpacked as the positional arguments."""
        return self._map_args(iter(input_iterator), kwargs or {}, order_outputs, return_exceptions)

    @live
    async def for_each(
        self,
        *iterables: Iterable[Any],
        kwargs: dict[str, Any] | None = None,
        ignore_exceptions: bool = False,
    ) -> None:
        """Run over the inputs for their side effects; results are discarded."""
        async for _ in self._map_args(
            zip(*iterables, strict=False), kwargs or {}, False, ignore_exceptions
        ):
            pass

    async def _map_args(
        self,
        arg_tuples: Iterable[tuple[Any, ...]],
        kwargs: dict[str, Any],
        order_outputs: bool,
        return_exceptions: bool,
    ) -> AsyncGenerator[Any, None]:
        """Results as their chunks come back. Closing it early (a `break` in the caller's loop)
        cancels the chunk requests under way; the server then drops their unstarted inputs."""
        chunks = _chunked(
            (serialize((tuple(args), kwargs), "a map input") for args in arg_tuples), MAP_CHUNK
        )
        pending: dict[int, asyncio.Task[bytes]] = {}
        done: dict[int, list[bytes]] = {}
        next_to_yield = 0
        exhausted = False
        index = 0
        try:
            while not exhausted or pending or done:
                while not exhausted and len(pending) < MAP_REQUESTS_IN_FLIGHT:
                    chunk = next(chunks, None)
                    if chunk is None:
                        exhausted = True
                        break
                    pending[index] = asyncio.ensure_future(self._post_inputs("map", chunk))
                    index += 1
                if pending:
                    finished, _ = await asyncio.wait(
                        pending.values(), return_when=asyncio.FIRST_COMPLETED
                    )
                    for i, task in list(pending.items()):
                        if task in finished:
                            done[i] = wire.unpack_frames(pending.pop(i).result())
                ready = sorted(done) if not order_outputs else []
                while order_outputs and next_to_yield in done:
                    ready.append(next_to_yield)
                    next_to_yield += 1
                for i in ready:
                    for frame in done.pop(i):
                        try:
                            value = outcome_value(frame)
                        except Exception as exc:
                            if not return_exceptions:
                                raise
                            value = exc
                        yield value
        finally:
            for task in pending.values():
                task.cancel()


def _chunked(items: Iterable[bytes], size: int) -> Any:
    chunk: list[bytes] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class FunctionCall:
    """A spawned input; its result is kept by the server until fetched (and after)."""

    def __init__(self, call_id: str) -> None:
        self.object_id = call_id

    def __repr__(self) -> str:
        return f"<ember.FunctionCall {self.object_id}>"

    @classmethod
    def from_id(cls, call_id: str) -> FunctionCall:
        return cls(call_id)

    @live
    async def get(self, timeout: float | None = None) -> Any:
        """Wait for the result; OutputExpiredError (a TimeoutError) after `timeout` seconds."""
        client = Client.from_settings()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = GET_POLL_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            response = await client.request(
                "GET",
                f"/api/v1/calls/{self.object_id}",
                params={"timeout": min(wait, GET_POLL_SECONDS)},
            )
            if response.status_code == 200:
                (frame,) = wire.unpack_frames(response.content)
                return outcome_value(frame)
            if deadline is not None and time.monotonic() >= deadline:
                raise OutputExpiredError(f"{self!r} did not finish within {timeout} s")

    @live
    async def cancel(self) -> None:
        """Cancel the call; a later `get()` raises InputCancellation."""
        await Client.from_settings().request("POST", f"/api/v1/calls/{self.object_id}/cancel")
