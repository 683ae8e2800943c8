"""The engine loop captures CUDA graphs only while idle: requests never wait for all of them.

The core is a stand-in (this machine has no GPU to capture graphs on); the loop, its queues and
its threads are the engine process's own."""

from __future__ import annotations

import multiprocessing
from typing import Any

from ember.llm.engines.base import SamplingParams
from ember.llm.engines.builtin.messages import AddRequest, Control, GraphsCaptured, StepOutputs
from ember.llm.engines.builtin.process import EngineLoop, Sender


class RecordingCore:
    """Remembers what the loop asked of it, in order; a request takes two steps."""

    def __init__(self, graphs: int, inbox: Any) -> None:
        self.uncaptured = list(range(graphs))
        self.inbox = inbox
        self.steps_left = 0
        self.events: list[str] = []

    def has_work(self) -> bool:
        return self.steps_left > 0

    def add(self, request: AddRequest) -> None:
        self.events.append(f"add {request.request_id}")
        self.steps_left = 2

    def step(self) -> list[Any]:
        if self.steps_left:
            self.steps_left -= 1
            self.events.append("step")
        return []

    def has_graphs_to_capture(self) -> bool:
        return bool(self.uncaptured)

    def capture_next(self) -> GraphsCaptured | None:
        self.events.append(f"capture {self.uncaptured.pop(0)}")
        if self.uncaptured:
            return None
        self.inbox.put(Control("shutdown"))  # the test's end
        return GraphsCaptured(len(self.events), 0.0)

    def report(self, outputs: list[Any]) -> StepOutputs:
        return StepOutputs(outputs, 0, 0, 0.0, 0)


def run_loop(graphs: int, before: list[AddRequest]) -> list[str]:
    from_replica, to_engine = multiprocessing.Pipe(duplex=False)
    from_engine, to_replica = multiprocessing.Pipe(duplex=False)
    sender = Sender(to_replica)
    core = RecordingCore(graphs, None)
    loop = EngineLoop(core, from_replica, sender)  # type: ignore[arg-type]
    core.inbox = loop.inbox
    for request in before:  # already waiting when the engine became ready
        loop.inbox.put(request)
    loop.run()
    sender.close()
    to_engine.close()
    messages = []
    while from_engine.poll():
        messages.append(from_engine.recv())
    assert isinstance(messages[-1], GraphsCaptured)  # the replica hears that all are captured
    return core.events


def test_a_request_waiting_at_ready_is_served_before_any_capture() -> None:
    request = AddRequest("r1", [1, 2, 3], SamplingParams(max_tokens=2))
    assert run_loop(3, [request]) == [
        "add r1",
        "step",
        "step",
        "capture 0",
        "capture 1",
        "capture 2",
    ]


def test_an_idle_engine_captures_every_graph() -> None:
    assert run_loop(2, []) == ["capture 0", "capture 1"]
