"""Function calls through a real server and real replica processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import ember
from ember.sdk.exceptions import (
    DeserializationError,
    ExecutionError,
    FunctionTimeoutError,
    InvalidError,
    NotFoundError,
)
from tests.integration.helpers import load


@pytest.fixture
def hello(server):  # type: ignore[no-untyped-def]
    module = load("hello")
    with module.app.run():
        yield module


def test_remote_local_and_async(hello) -> None:  # type: ignore[no-untyped-def]
    assert hello.square.remote(7) == 49
    assert hello.square.local(7) == 49
    assert hello.async_double.remote(21) == 42

    async def from_async_code() -> int:
        return await hello.square.remote.aio(5)  # type: ignore[no-any-return]

    assert asyncio.run(from_async_code()) == 25


def test_map_and_starmap(hello) -> None:  # type: ignore[no-untyped-def]
    assert list(hello.square.map(range(50))) == [x * x for x in range(50)]
    assert sorted(hello.square.map(range(20), order_outputs=False)) == sorted(
        x * x for x in range(20)
    )
    assert list(hello.async_double.starmap([(1,), (2,)])) == [2, 4]
    # for_each: tests/integration/test_map.py checks that every input ran.


def test_map_large_input_count(hello) -> None:  # type: ignore[no-untyped-def]
    assert sum(hello.square.map(range(3000))) == sum(x * x for x in range(3000))


def test_map_return_exceptions(hello) -> None:  # type: ignore[no-untyped-def]
    results = list(hello.fail.map(["a", "b"], return_exceptions=True))
    assert [type(r).__name__ for r in results] == ["CustomError", "CustomError"]
    assert [str(r) for r in results] == ["a", "b"]
    with pytest.raises(hello.CustomError):
        list(hello.fail.map(["boom"]))


def test_user_exception_is_reraised_with_remote_traceback(hello) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(hello.CustomError, match="bad input") as info:
        hello.fail.remote("bad input")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Remote traceback" in notes
    assert "raise CustomError(message)" in notes


def test_spawn_and_get(hello) -> None:  # type: ignore[no-untyped-def]
    call = hello.square.spawn(12)
    assert call.get(timeout=60) == 144
    again = ember.FunctionCall.from_id(call.object_id)
    assert again.get() == 144
    with pytest.raises(NotFoundError, match="finished calls are kept for 7 days"):
        ember.FunctionCall.from_id("fc-gone").get()  # e.g. removed by retention


def test_spawn_get_timeout_and_cancel(hello) -> None:  # type: ignore[no-untyped-def]
    call = hello.concurrent_sleep.spawn(30)
    with pytest.raises(TimeoutError):
        call.get(timeout=0.5)
    call.cancel()
    with pytest.raises(ember.exception.InputCancellation):
        call.get(timeout=10)


def test_timeout(hello) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FunctionTimeoutError, match="timed out after 1 s"):
        hello.sleepy.remote(10)
    assert hello.sleepy.remote(0) == "awake"  # a fresh replica replaced the stuck one


def test_crash_is_retried(hello, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert hello.crash_unless_marked.remote(str(tmp_path / "marker")) == "survived"


def test_crash_after_retries_is_a_clear_error(hello) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ExecutionError, match=r"crashed or was lost .tried 2 time"):
        hello.always_crash.remote()


def test_unpicklable_arguments_and_results(hello) -> None:  # type: ignore[no-untyped-def]
    import threading

    with pytest.raises(DeserializationError, match="cannot serialize the function's arguments"):
        hello.square.remote(threading.Lock())
    with pytest.raises(DeserializationError, match="cannot serialize the return value"):
        hello.returns_unpicklable.remote()


def test_nested_calls_from_a_replica(hello) -> None:  # type: ignore[no-untyped-def]
    assert hello.nested.remote(4) == 17


def test_class_parameters_enter_and_methods(hello) -> None:  # type: ignore[no-untyped-def]
    counter = hello.Counter(start=10)
    assert counter.increment.remote() == 11
    assert counter.increment.remote(by=5) == 16  # same replica, state kept
    other = hello.Counter(start=100)
    pid_a, start_a = counter.whoami.remote()
    pid_b, start_b = other.whoami.remote()
    assert (start_a, start_b) == (10, 100)
    assert pid_a != pid_b  # each parameter set has its own replicas
    with pytest.raises(InvalidError, match="no parameter nope"):
        hello.Counter(nope=1)


def test_lookup_by_name(hello) -> None:  # type: ignore[no-untyped-def]
    name = hello.app.deployed_name
    assert ember.Function.from_name(name, "square").remote(3) == 9
    Counter = ember.Cls.from_name(name, "Counter")
    assert Counter(start=1).increment.remote() == 2
    with pytest.raises(NotFoundError, match="has no function 'nope'"):
        ember.Function.from_name(name, "nope").remote()
    with pytest.raises(NotFoundError, match="has no method 'nope'"):
        Counter().nope.remote()
    with pytest.raises(NotFoundError, match="is not deployed"):
        ember.Function.from_name("no-such-app", "square").remote()


def test_concurrent_inputs_share_a_replica(hello) -> None:  # type: ignore[no-untyped-def]
    pids = list(hello.concurrent_sleep.map([0.5] * 4))
    assert len(set(pids)) == 1  # max_inputs=4: one replica took all four at once


def test_calling_an_app_that_is_not_running(server) -> None:  # type: ignore[no-untyped-def]
    module = load("hello")
    with pytest.raises(InvalidError, match="not running"):
        module.square.remote(1)
