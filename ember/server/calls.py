"""Calls: spawned inputs kept in the store (they survive a restart), and a record of every call."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from ember import wire
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import CallRecord, CallState, Store
from ember.server.write_behind import WriteBehind

RunInputs = Callable[[str, str, str | None, str, list[bytes]], Awaitable[list[bytes]]]


def outcome_status(frames: list[bytes]) -> CallState:
    return "succeeded" if all(f[0] == wire.Outcome.OK for f in frames) else "failed"


class CallRecorder(WriteBehind[CallRecord]):
    """Writes a record per `.remote()` / `.map` request, behind the hot path, in batches."""

    def __init__(self, store: Store, flush_interval: float = 0.5) -> None:
        super().__init__(store.insert_calls, flush_interval)

    def record(
        self,
        app: str,
        function: str,
        method: str | None,
        kind: str,
        frames: list[bytes],
        started: float,
    ) -> None:
        self.append(
            CallRecord(
                id=f"fc-{uuid.uuid4().hex}",
                app=app,
                function=function,
                method=method,
                kind=kind,
                status=outcome_status(frames),
                inputs=len(frames),
                created_at=started,
                finished_at=time.time(),
            )
        )


class SpawnedCalls:
    """`.spawn()`: the input and, later, its output live in the store until fetched."""

    def __init__(self, store: AsyncStore, run_inputs: RunInputs) -> None:
        self._store, self._run_inputs = store, run_inputs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    async def spawn(
        self, app: str, function: str, method: str | None, params: str, payload: bytes
    ) -> str:
        call = CallRecord(
            id=f"fc-{uuid.uuid4().hex}",
            app=app,
            function=function,
            method=method,
            params=params,
            kind="spawn",
            status="pending",
            payload=payload,
            created_at=time.time(),
        )
        await self._store.run(Store.insert_calls, [call])
        self._start(call)
        return call.id

    def _start(self, call: CallRecord) -> None:
        self._done[call.id] = asyncio.Event()
        self._tasks[call.id] = asyncio.ensure_future(self._run(call))

    async def _run(self, call: CallRecord) -> None:
        try:
            await self._store.run(Store.update_call, call.id, "running")
            assert call.payload is not None, "a spawned call keeps its input"
            frames = await self._run_inputs(
                call.app, call.function, call.method, call.params, [call.payload]
            )
            await self._finish(call.id, outcome_status(frames), frames[0])
        except asyncio.CancelledError:
            pass  # `cancel` already recorded the outcome
        except Exception as exc:  # noqa: BLE001 - e.g. the app was stopped meanwhile
            frame = wire.platform_error_frame(type(exc).__name__, getattr(exc, "message", str(exc)))
            await self._finish(call.id, "failed", frame)
        finally:
            self._tasks.pop(call.id, None)
            self._done.pop(call.id, asyncio.Event()).set()

    async def _finish(self, call_id: str, status: CallState, frame: bytes) -> None:
        await self._store.run(Store.update_call, call_id, status, frame, time.time())

    def running(self, call_id: str) -> bool:
        return call_id in self._tasks

    async def recover(self) -> int:
        """Run again the spawned calls a previous server process left unfinished."""
        unfinished = await self._store.run(Store.unfinished_spawns)
        for call in unfinished:
            self._start(call)
        return len(unfinished)

    async def wait(self, call_id: str, timeout: float) -> CallRecord | None:
        """The call once finished, or None if still running after `timeout` seconds."""
        event = self._done.get(call_id)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return None
        call = await self._store.run(Store.get_call, call_id)
        return call if call is not None and call.finished else None

    async def cancel(self, call_id: str) -> None:
        frame = wire.platform_error_frame("InputCancellation", f"call {call_id} was cancelled")
        task = self._tasks.get(call_id)
        if task is not None:
            task.cancel()
        await self._finish(call_id, "cancelled", frame)

    async def close(self) -> None:
        """Stop waiting on running spawns; they stay 'running' in the store and are rerun."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
