"""The dispatcher: retries, per-input timeouts and what each failure is called, without processes.

Replicas are fakes; their HTTP answers are scripted (tests/fakes/http.py).
"""

from __future__ import annotations

import asyncio
import json

from ember import wire
from ember.server.pools import Pool
from ember.server.replicas.state import ReplicaState
from tests.fakes.http import Answer
from tests.unit.conftest import Harness, until

OK = [bytes([wire.Outcome.OK]) + b"out-%d" % i for i in range(4)]
USER_ERROR = bytes([wire.Outcome.USER_ERROR]) + b"raised"


def platform_error(frame: bytes) -> dict[str, str]:
    assert frame[0] == wire.Outcome.PLATFORM_ERROR
    return dict(json.loads(frame[1:]))


async def run(h: Harness, pool: Pool, inputs: list[bytes]) -> list[bytes]:
    """Dispatch with replicas made ready as soon as the autoscaler starts them."""
    running = asyncio.ensure_future(h.dispatcher.run(pool, None, inputs))
    while not running.done():
        await step(h, pool)
    return running.result()


async def step(h: Harness, pool: Pool) -> None:
    """One autoscaler step; the replicas it started become ready."""
    await h.scale()
    for replica in h.in_state(pool, ReplicaState.STARTING):
        if replica.handle is not None and not h.fake(replica).ready.done():
            h.fake(replica).become_ready()
    await asyncio.sleep(0)


async def test_user_errors_are_retried_up_to_the_policy(harness: Harness) -> None:
    pool = harness.pool(retries={"max_retries": 1, "initial_delay": 0.0})
    answers = iter([Answer.frames(USER_ERROR), Answer.frames(OK[0])])
    harness.http.answer = lambda target, body: next(answers)
    assert await run(harness, pool, [b"in"]) == [OK[0]]


def echo(target: str, body: bytes) -> Answer:
    """A replica that answers each input with `ok:<input>`."""
    return Answer.frames(*(b"\x00ok:" + payload for payload in wire.unpack_frames(body)))


async def test_each_input_of_a_batch_has_its_own_timeout(harness: Harness) -> None:
    """In the first request (three inputs), the second input hangs: the first keeps its output,
    the second times out, the third runs again elsewhere, and the stuck replica is replaced."""
    pool = harness.pool(timeout=0.05, max_containers=1)
    inputs = [b"%d" % i for i in range(40)]  # 16 slots: the first request takes three inputs

    def answer(target: str, body: bytes) -> Answer:
        if len(harness.http.requests) == 1:
            first = wire.unpack_frames(body)[0]
            return Answer.frames(b"\x00ok:" + first, hang=True)
        return echo(target, body)

    harness.http.answer = answer
    outputs = await run(harness, pool, inputs)
    first_batch = wire.unpack_frames(harness.http.requests[0][1])
    assert len(first_batch) == 3
    stuck = inputs.index(first_batch[1])
    assert platform_error(outputs[stuck])["type"] == "FunctionTimeoutError"
    others = [(out, i) for out, i in zip(outputs, inputs, strict=True) if i != first_batch[1]]
    assert all(out == b"\x00ok:" + i for out, i in others)
    assert harness.backend.replicas[0].exit_code.done()  # the replica stuck in user code went


async def test_a_dropped_connection_is_retried_and_keeps_the_replica(harness: Harness) -> None:
    pool = harness.pool(retries={"max_retries": 1, "initial_delay": 0.0})
    answers = iter([Answer(error="connection reset by peer"), Answer.frames(OK[0])])
    harness.http.answer = lambda target, body: next(answers)
    assert await run(harness, pool, [b"in"]) == [OK[0]]
    (replica,) = pool.replicas.values()
    assert replica.state is ReplicaState.READY  # alive: not killed for a broken connection


async def test_a_replica_whose_process_exited_is_lost(harness: Harness) -> None:
    pool = harness.pool()

    def crash(target: str, body: bytes) -> Answer:
        harness.backend.replicas[0].exit(-9)
        return Answer(error="connection closed mid-response")

    harness.http.answer = crash
    (output,) = await run(harness, pool, [b"in"])
    error = platform_error(output)
    assert error["type"] == "ExecutionError" and "crashed or was lost" in error["message"]
    await until(lambda: not pool.replicas)


async def test_an_error_status_is_reported_with_what_the_replica_said(harness: Harness) -> None:
    pool = harness.pool()
    harness.http.answer = lambda target, body: Answer(status=500, pieces=[b"internal oops"])
    (output,) = await run(harness, pool, [b"in"])
    assert "HTTP 500: internal oops" in platform_error(output)["message"]


async def test_too_few_outputs_is_an_error_not_a_crash_of_the_dispatcher(harness: Harness) -> None:
    pool = harness.pool(max_containers=1)

    def forgets_the_last(target: str, body: bytes) -> Answer:
        inputs = wire.unpack_frames(body)
        return Answer.frames(*(b"\x00ok:" + payload for payload in inputs[:-1]))

    harness.http.answer = forgets_the_last
    inputs = [b"%d" % i for i in range(40)]
    outputs = await run(harness, pool, inputs)
    first_batch = wire.unpack_frames(harness.http.requests[0][1])
    assert outputs[0] == b"\x00ok:" + first_batch[0]
    last = inputs.index(first_batch[-1])
    message = platform_error(outputs[last])["message"]
    assert f"{len(first_batch) - 1} outputs for {len(first_batch)} inputs" in message


async def test_a_caller_that_leaves_keeps_the_slot_until_the_replica_answers(
    harness: Harness,
) -> None:
    """A `.map` broken out of cancels its dispatch, but the replica still runs the input: with
    `max_inputs=1`, no second input may reach it until that answer ends."""
    pool = harness.pool(max_containers=1)
    answered = asyncio.Event()
    harness.http.answer = lambda target, body: Answer.frames(hang=True, until=answered)
    left = asyncio.ensure_future(harness.dispatcher.run(pool, None, [b"first"]))
    while not harness.http.requests:
        await step(harness, pool)
    left.cancel()
    second = asyncio.ensure_future(run(harness, pool, [b"second"]))
    await harness.scale()
    (replica,) = pool.replicas.values()
    assert replica.in_flight == 1 and len(harness.http.requests) == 1  # still busy: it waits
    harness.http.answer = echo
    answered.set()
    assert await second == [b"\x00ok:second"]
    assert [wire.unpack_frames(body) for _, body, _ in harness.http.requests] == [
        [b"first"],
        [b"second"],
    ]
    assert replica.state is ReplicaState.READY and replica.in_flight == 0
