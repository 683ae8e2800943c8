"""`.map` and `.for_each` as seen from the inputs they run: every one, or none after a `break`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import ember.sdk.function
from ember.cli.loader import import_file
from tests.integration.helpers import replicas_folder

APP = '''
import os
import time
from pathlib import Path

import ember

app = ember.App("inputs")


@app.function()
@ember.concurrent(max_inputs=8)
def record(x: int, folder: str) -> int:
    Path(folder, f"ran-{x}").touch()
    return x


@app.function(max_containers=1)  # one replica with one input slot
def gated(x: int, folder: str) -> int:
    """The first input to start returns at once; the others wait for the test's "go"."""
    Path(folder, f"ran-{x}").touch()
    try:
        os.close(os.open(Path(folder, "first"), os.O_CREAT | os.O_EXCL))
        return x
    except FileExistsError:
        pass
    deadline = time.monotonic() + 60
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return x
'''


@pytest.fixture
def inputs(server, tmp_path: Path) -> Iterator[ModuleType]:  # type: ignore[no-untyped-def]
    source = tmp_path / "inputs_app.py"
    source.write_text(APP)
    module = import_file(source)
    with module.app.run():
        yield module


def ran(folder: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("ran-")) for p in folder.glob("ran-*"))


def test_for_each_runs_every_input(inputs: ModuleType, tmp_path: Path) -> None:
    folder = replicas_folder(tmp_path / "for_each")
    inputs.record.for_each(range(30), kwargs={"folder": str(folder)})
    assert ran(folder) == list(range(30))


def test_map_from_async_code(inputs: ModuleType, tmp_path: Path) -> None:
    async def squares() -> list[int]:
        return [
            x * x async for x in inputs.record.map.aio(range(5), kwargs={"folder": str(tmp_path)})
        ]

    assert asyncio.run(squares()) == [0, 1, 4, 9, 16]


def test_breaking_out_of_map_stops_the_inputs_still_waiting(
    inputs: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One input per request, so the requests in flight stand for a long map's chunks.
    monkeypatch.setattr(ember.sdk.function, "MAP_CHUNK", 1)
    in_flight = 8
    monkeypatch.setattr(ember.sdk.function, "MAP_REQUESTS_IN_FLIGHT", in_flight)
    folder = replicas_folder(tmp_path / "gates")
    results = inputs.gated.map(range(50), kwargs={"folder": str(folder)}, order_outputs=False)
    for first in results:  # noqa: B007 - `first` is checked below
        break
    del results
    # When the loop broke, one input held the only slot (waiting for "go") and the other
    # requests in flight waited on the server for that slot, first come first served. A call
    # made now queues behind whatever the server still holds for the abandoned map.
    barrier = inputs.gated.spawn(-1, str(folder))
    (folder / "go").touch()
    assert barrier.get(timeout=60) == -1
    started = ran(folder)
    assert first in started and -1 in started
    assert max(started) < in_flight  # inputs never sent stay unsent
    # Had the server kept the abandoned inputs, all `in_flight` of them would have run before
    # the barrier. (One may slip into the slot freed in the instant the requests are dropped.)
    map_inputs = [x for x in started if x >= 0]
    assert len(map_inputs) < in_flight, started
