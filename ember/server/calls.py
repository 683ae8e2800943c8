"""Calls: spawned inputs kept in the store (they survive a restart), and a record of every call."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ember import wire
from ember.server.store.sql import SqlStore
from ember.server.write_behind import WriteBehind

RunInputs = Callable[[str, str, str | None, str, list[bytes]], Awaitable[list[bytes]]]


def outcome_status(frames: list[bytes]) -> str:
    return "succeeded" if all(f[0] == wire.Outcome.OK for f in frames) else "failed"


class CallRecorder(WriteBehind):
    """Writes a row per `.remote()` / `.map` request, behind the hot path, in batches."""

    def __init__(self, store: SqlStore, flush_interval: float = 0.5) -> None:
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
            {
                "id": f"fc-{uuid.uuid4().hex}",
                "app": app,
                "function": function,
                "method": method,
                "params": "",
                "kind": kind,
                "status": outcome_status(frames),
                "inputs": len(frames),
                "created_at": started,
                "finished_at": time.time(),
            }
        )


class SpawnedCalls:
    """`.spawn()`: the input and, later, its output live in the store until fetched."""

    def __init__(self, store: SqlStore, run_inputs: RunInputs) -> None:
        self._store, self._run_inputs = store, run_inputs
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: dict[str, asyncio.Event] = {}

    def spawn(
        self, app: str, function: str, method: str | None, params: str, payload: bytes
    ) -> str:
        call_id = f"fc-{uuid.uuid4().hex}"
        self._store.insert_calls(
            [
                {
                    "id": call_id,
                    "app": app,
                    "function": function,
                    "method": method,
                    "params": params,
                    "kind": "spawn",
                    "status": "pending",
                    "inputs": 1,
                    "payload": payload,
                    "created_at": time.time(),
                }
            ]
        )
        self._start(call_id, app, function, method, params, payload)
        return call_id

    def _start(
        self, call_id: str, app: str, function: str, method: str | None, params: str, payload: bytes
    ) -> None:
        self._done[call_id] = asyncio.Event()
        self._tasks[call_id] = asyncio.ensure_future(
            self._run(call_id, app, function, method, params, payload)
        )

    async def _run(
        self, call_id: str, app: str, function: str, method: str | None, params: str, payload: bytes
    ) -> None:
        try:
            self._store.update_call(call_id, status="running")
            frames = await self._run_inputs(app, function, method, params, [payload])
            # Off the event loop: the result may be large, the database across a network.
            await asyncio.to_thread(
                self._store.update_call,
                call_id,
                status=outcome_status(frames),
                result=frames[0],
                finished_at=time.time(),
            )
        except asyncio.CancelledError:
            pass  # `cancel` already recorded the outcome
        except Exception as exc:  # noqa: BLE001 - e.g. the app was stopped meanwhile
            frame = wire.platform_error_frame(type(exc).__name__, getattr(exc, "message", str(exc)))
            self._store.update_call(call_id, status="failed", result=frame, finished_at=time.time())
        finally:
            self._tasks.pop(call_id, None)
            self._done.pop(call_id, asyncio.Event()).set()

    def running(self, call_id: str) -> bool:
        return call_id in self._tasks

    def recover(self) -> int:
        """Run again the spawned calls a previous server process left unfinished."""
        unfinished = self._store.unfinished_spawns()
        for row in unfinished:
            self._start(
                row["id"], row["app"], row["function"], row["method"], row["params"], row["payload"]
            )
        return len(unfinished)

    async def wait(self, call_id: str, timeout: float) -> dict[str, Any] | None:
        """The call's row once finished, or None if still running after `timeout` seconds."""
        event = self._done.get(call_id)
        if event is not None:
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return None
        row = await asyncio.to_thread(self._store.get_call, call_id)
        if row is not None and row["status"] in ("pending", "running"):
            return None
        return row

    def cancel(self, call_id: str) -> None:
        frame = wire.platform_error_frame("InputCancellation", f"call {call_id} was cancelled")
        self._store.update_call(call_id, status="cancelled", result=frame, finished_at=time.time())
        task = self._tasks.get(call_id)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop waiting on running spawns; they stay 'running' in the store and are rerun."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
