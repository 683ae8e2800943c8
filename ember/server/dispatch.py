"""Dispatcher: run a batch of inputs on a pool's replicas, with retries and per-input timeouts.

A batch (one `.remote()` input, or a chunk of a `.map`) is fanned out over free replica slots;
each slot takes a share of the remaining inputs in one request, so small maps spread over
replicas and large ones travel in few requests. The replica runs a request's inputs one after
the other and streams each output as it is done, so each input is held to its own `timeout`:
when one overruns, the outputs before it are kept, it fails with FunctionTimeoutError, the inputs
after it go back in line, and the stuck replica is replaced.

What else can happen to an attempt, and what it means:
- a user exception: retried up to the function's `retries` (as Modal does);
- the replica's process exited: the replica is lost; retried;
- the replica is alive but did not answer (a broken connection; `http1` already retried a stale
  one): retried, and the replica is not killed for it; only the health check replaces replicas
  that stop answering;
- the replica answered with an error status, or too few outputs: retried, with what it said.
A caller that leaves (a `.map` broken out of) does not free the replica's slot: the replica runs
its input to the end, so the slot is held until its answer ends or the replica is replaced.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ember import wire
from ember.http1 import Http1Pool, HttpError
from ember.server.metrics import ServerMetrics
from ember.server.pools import Pool
from ember.server.replicas.state import ReplicaRecord
from ember.server.replicas.supervisor import Supervisor
from ember.server.scheduling.queue import QueueTimeout, ReplicaStartupError
from ember.server.settings import ServerSettings

MAX_INPUTS_PER_REQUEST = 128
MAX_SLOTS_PER_BATCH = 16
INPUTS_PATH = "/__ember/inputs"
EXIT_GRACE = 1.0  # seconds to tell a replica that died from one that dropped a connection


class Failure(Enum):
    TIMEOUT = "timeout"  # final: FunctionTimeoutError
    LOST = "lost"  # the replica's process exited
    NO_ANSWER = "no answer"  # alive, but the connection broke
    BAD_ANSWER = "bad answer"  # an error status, or fewer outputs than inputs


@dataclass
class Attempt:
    """What one request to a replica gave: the outputs of its first inputs, in order, and what
    happened to the next one, if anything did."""

    outputs: list[bytes] = field(default_factory=list)
    failure: Failure | None = None
    detail: str = ""


class Dispatcher:
    def __init__(
        self,
        settings: ServerSettings,
        supervisor: Supervisor,
        http: Http1Pool,
        answered: Callable[[ReplicaRecord], None],
        metrics: ServerMetrics | None = None,
    ) -> None:
        self._settings, self._supervisor, self._http = settings, supervisor, http
        self._answered = answered  # a replica's first answer completes its cold-start record
        self._metrics = metrics  # queue waits, and slot time for the inputs' GPU time
        self._sends: set[asyncio.Task[Attempt]] = set()

    async def run(self, pool: Pool, method: str | None, inputs: list[bytes]) -> list[bytes]:
        """One output frame per input, in input order."""
        outputs: list[bytes | None] = [None] * len(inputs)
        attempts = [0] * len(inputs)
        pending = deque(range(len(inputs)))
        slots = min(len(inputs), MAX_SLOTS_PER_BATCH)

        async def worker() -> None:
            while pending:
                waiting = time.perf_counter()
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
                if self._metrics is not None:
                    self._metrics.waited(pool, time.perf_counter() - waiting)
                send = self._hold_slot(pool, replica, method, [inputs[i] for i in group])
                attempt = await asyncio.shield(send)
                await self._settle(pool, group, attempt, outputs, attempts, pending)

        if slots == 1:
            await worker()  # one input (a `.remote()`): no task of its own
        else:
            await asyncio.gather(*(worker() for _ in range(slots)))
        lost = wire.platform_error_frame("ExecutionError", "input was lost")
        return [out if out is not None else lost for out in outputs]

    def _hold_slot(
        self, pool: Pool, replica: ReplicaRecord, method: str | None, batch: list[bytes]
    ) -> asyncio.Task[Attempt]:
        """Send the batch; the replica's slot is released when its answer ends, not when the
        caller stops waiting: a caller that left (a `.map` broken out of) leaves the replica
        running its input, and no other input may land on it meanwhile (`max_inputs`). The
        answer still ends within the input's `timeout`, or when the replica is replaced."""
        started = time.perf_counter()

        def release(send: asyncio.Task[Attempt]) -> None:
            self._sends.discard(send)
            pool.queue.release(replica)
            if self._metrics is not None and not send.cancelled() and not send.exception():
                attempt = send.result()
                ran = len(attempt.outputs) + (attempt.failure is not None)
                self._metrics.slot_held(replica, ran, time.perf_counter() - started)

        send = asyncio.ensure_future(self._send(pool, replica, method, batch))
        self._sends.add(send)  # a task nobody awaits any more must stay referenced
        send.add_done_callback(release)
        return send

    async def _send(
        self, pool: Pool, replica: ReplicaRecord, method: str | None, batch: list[bytes]
    ) -> Attempt:
        """Stream the batch's outputs from the replica, each input within `timeout`."""
        assert replica.handle is not None
        target = f"{INPUTS_PATH}?method={method}" if method else INPUTS_PATH
        timeout = pool.spec.timeout
        handle, attempt, frames = replica.handle, Attempt(), wire.FrameReader()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout) as limit:
                response = await self._http.request(
                    "POST", handle.host, handle.port, target, body=wire.pack_frames(batch)
                )
                self._answered(replica)
                if response.status != 200:
                    text = (await response.read()).decode(errors="replace")[:500]
                    return Attempt(
                        failure=Failure.BAD_ANSWER, detail=f"HTTP {response.status}: {text}"
                    )
                async for chunk in response.iter_body():
                    done = frames.feed(chunk)
                    if done:
                        attempt.outputs += done
                        limit.reschedule(loop.time() + timeout)  # the next input's own timeout
        except TimeoutError:
            if len(attempt.outputs) < len(batch):
                self._supervisor.kill(replica, f"an input ran past its timeout of {timeout:g} s")
                attempt.failure, attempt.detail = Failure.TIMEOUT, f"timeout={timeout:g}"
        except HttpError as exc:
            if len(attempt.outputs) < len(batch):
                attempt.failure = await self._lost_or_silent(replica)
                attempt.detail = str(exc)
        else:
            if len(attempt.outputs) < len(batch):
                attempt.failure = Failure.BAD_ANSWER
                attempt.detail = f"{len(attempt.outputs)} outputs for {len(batch)} inputs"
        del attempt.outputs[len(batch) :]  # a replica that sent more has no say in it
        return attempt

    async def _lost_or_silent(self, replica: ReplicaRecord) -> Failure:
        """A broken connection: did the replica die (its process exited), or only drop it?"""
        if replica.exited is None:
            return Failure.NO_ANSWER
        try:
            await asyncio.wait_for(asyncio.shield(replica.exited), EXIT_GRACE)
        except TimeoutError:
            return Failure.NO_ANSWER
        return Failure.LOST

    async def _settle(
        self,
        pool: Pool,
        group: list[int],
        attempt: Attempt,
        outputs: list[bytes | None],
        attempts: list[int],
        pending: deque[int],
    ) -> None:
        """Keep final outputs; put inputs that may be retried, and those that never ran, back at
        the front of the line."""
        policy = pool.spec.retries
        retry: list[int] = []
        done = len(attempt.outputs)
        for index, frame in zip(group, attempt.outputs, strict=False):
            if frame[0] == wire.Outcome.USER_ERROR and attempts[index] < policy.max_retries:
                attempts[index] += 1
                retry.append(index)
            else:
                outputs[index] = frame
        unstarted = group[done + 1 :] if attempt.failure else []
        if attempt.failure is not None:
            index = group[done]
            if attempt.failure is Failure.TIMEOUT:
                outputs[index] = _timeout_frame(pool, attempt.detail)
            elif attempts[index] < policy.max_retries:
                attempts[index] += 1
                retry.append(index)
            else:
                outputs[index] = _failure_frame(pool, attempt, attempts[index] + 1)
        if retry:
            delay = min(
                policy.max_delay,
                policy.initial_delay * policy.backoff_coefficient ** (max(attempts) - 1),
            )
            await asyncio.sleep(delay)
        pending.extendleft(reversed(retry + unstarted))


def _timeout_frame(pool: Pool, detail: str) -> bytes:
    message = f"{pool.key.function} timed out after {pool.spec.timeout:g} s ({detail})"
    return wire.platform_error_frame("FunctionTimeoutError", message)


def _failure_frame(pool: Pool, attempt: Attempt, tries: int) -> bytes:
    what = {
        Failure.LOST: "crashed or was lost",
        Failure.NO_ANSWER: "did not answer",
        Failure.BAD_ANSWER: "answered with an error",
    }[attempt.failure or Failure.LOST]
    message = (
        f"the replica running {pool.key.function} {what} (tried {tries} time(s)): "
        f"{attempt.detail}; see `ember app logs {pool.key.app}`"
    )
    return wire.platform_error_frame("ExecutionError", message)
