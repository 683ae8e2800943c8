"""Dispatcher: run a batch of inputs on a pool's replicas, with retries and timeouts.

A batch (one `.remote()` input, or a chunk of a `.map`) is fanned out over free replica slots; each
slot takes a share of the remaining inputs in one request, so small maps spread over replicas and
large ones travel in few requests. Replica crashes are retried up to the function's `retries`, as
are user exceptions (as Modal does); timeouts are not retried and the stuck replica is replaced.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from ember import wire
from ember.http1 import Http1Pool, HttpError
from ember.server.gateway.queue import QueueTimeout
from ember.server.lifecycle import ReplicaManager, ReplicaStartupError
from ember.server.pools import Pool, Replica
from ember.server.settings import ServerSettings

MAX_INPUTS_PER_REQUEST = 128
MAX_SLOTS_PER_BATCH = 16
INPUTS_PATH = "/__ember/inputs"


class ReplicaLost(Exception):
    """The replica died or stopped answering while it held inputs."""


class Dispatcher:
    def __init__(self, settings: ServerSettings, replicas: ReplicaManager, http: Http1Pool) -> None:
        self._settings, self._replicas, self._http = settings, replicas, http

    async def run(self, pool: Pool, method: str | None, inputs: list[bytes]) -> list[bytes]:
        """One output frame per input, in input order."""
        outputs: list[bytes | None] = [None] * len(inputs)
        attempts = [0] * len(inputs)
        pending = deque(range(len(inputs)))
        slots = min(len(inputs), MAX_SLOTS_PER_BATCH)

        async def worker() -> None:
            while pending:
                try:
                    replica = await pool.queue.acquire(self._settings.queue_wait_timeout)
                except (QueueTimeout, ReplicaStartupError) as exc:
                    kind = (
                        "FunctionTimeoutError"
                        if isinstance(exc, QueueTimeout)
                        else "ExecutionError"
                    )
                    while pending:
                        outputs[pending.popleft()] = wire.platform_error_frame(kind, str(exc))
                    return
                share = min(MAX_INPUTS_PER_REQUEST, math.ceil(len(pending) / slots))
                group = [pending.popleft() for _ in range(min(share, len(pending)))]
                if not group:
                    pool.queue.release(replica)
                    return
                try:
                    frames = await self._send(pool, replica, method, [inputs[i] for i in group])
                finally:
                    pool.queue.release(replica)
                await self._settle(pool, group, frames, outputs, attempts, pending)

        await asyncio.gather(*(worker() for _ in range(slots)))
        return [
            out
            if out is not None
            else wire.platform_error_frame("ExecutionError", "input was lost")
            for out in outputs
        ]

    async def _send(
        self, pool: Pool, replica: Replica, method: str | None, batch: list[bytes]
    ) -> list[bytes] | None:
        """The replica's output frames, or None if it was lost (crash, broken connection)."""
        target = f"{INPUTS_PATH}?method={method}" if method else INPUTS_PATH
        handle = replica.handle
        try:
            async with asyncio.timeout(pool.spec.timeout * len(batch)):
                response = await self._http.request(
                    "POST", handle.host, handle.port, target, body=wire.pack_frames(batch)
                )
                body = await response.read()
        except TimeoutError:
            self._replicas.kill(pool, replica)  # its thread is stuck in user code
            message = (
                f"{pool.key.function} timed out after {pool.spec.timeout:g} s "
                f"(timeout={pool.spec.timeout:g})"
            )
            return [wire.platform_error_frame("FunctionTimeoutError", message)] * len(batch)
        except HttpError:
            self._replicas.kill(pool, replica)
            return None
        if response.status != 200:
            return None
        return wire.unpack_frames(body)

    async def _settle(
        self,
        pool: Pool,
        group: list[int],
        frames: list[bytes] | None,
        outputs: list[bytes | None],
        attempts: list[int],
        pending: deque[int],
    ) -> None:
        """Keep final outputs; put inputs that may be retried back at the front of the line."""
        policy = pool.spec.retries
        retry: list[int] = []
        for position, index in enumerate(group):
            frame = frames[position] if frames is not None else None
            failed = frame is None or frame[0] == wire.Outcome.USER_ERROR
            if failed and attempts[index] < policy.max_retries:
                attempts[index] += 1
                retry.append(index)
            elif frame is None:
                outputs[index] = wire.platform_error_frame(
                    "ExecutionError",
                    f"the replica running {pool.key.function} crashed or was lost "
                    f"(tried {attempts[index] + 1} time(s)); see `ember app logs {pool.key.app}`",
                )
            else:
                outputs[index] = frame
        if retry:
            delay = min(
                policy.max_delay,
                policy.initial_delay * policy.backoff_coefficient ** (max(attempts) - 1),
            )
            await asyncio.sleep(delay)
            pending.extendleft(reversed(retry))
