"""The engine process: forked from the replica, it alone touches the GPU and runs the engine loop.

Its main thread steps the engine. One thread receives the replica's messages and one sends the
outputs back, so unpickling, pickling and pipe writes overlap the model's work. It exits when the
replica says so, when the replica's end of the pipe closes (the replica is gone), or after
reporting a failure (exit code 1).
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

from ember.llm.engines.builtin.engine import EngineCore, ModelLoader
from ember.llm.engines.builtin.messages import (
    AbortRequests,
    AddRequest,
    Control,
    ControlDone,
    EngineFailed,
    FromEngine,
    ToEngine,
)
from ember.llm.engines.builtin.settings import EngineSettings
from ember.runtime import phases


def engine_main(
    settings: EngineSettings,
    load: ModelLoader,
    inbox: Connection,
    outbox: Connection,
    replica_ends: list[Connection],
) -> None:
    """The engine process's target."""
    for end in replica_ends:  # inherited through fork; the replica's alone
        end.close()
    _name_process(b"ember-engine")
    # Ctrl-C in a terminal reaches the whole process group: the replica stops the engine itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sender = Sender(outbox)
    phases.take()  # the replica's, inherited through fork: this process reports its own
    try:
        core = EngineCore(settings, load)
        sender.put(core.ready())
        EngineLoop(core, inbox, sender).run()
    except Exception as exc:  # noqa: BLE001 - the replica is told why, then the process ends
        traceback.print_exc()
        sender.put(EngineFailed(f"{type(exc).__name__}: {exc}"))
        sender.close()
        sys.exit(1)
    sender.close()


def _name_process(name: bytes) -> None:
    """Show as `name` in ps and /proc/<pid>/comm: a fork keeps the replica's command line."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only (prctl's PR_SET_NAME)
        ctypes.CDLL(None).prctl(15, name)


class Sender:
    """Sends messages to the replica from a thread of its own."""

    def __init__(self, outbox: Connection) -> None:
        self.outbox = outbox
        self.queue: queue.SimpleQueue[FromEngine | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._send_all, name="engine-sender", daemon=True)
        self.thread.start()

    def put(self, message: FromEngine) -> None:
        self.queue.put(message)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _send_all(self) -> None:
        while (message := self.queue.get()) is not None:
            try:
                self.outbox.send(message)
            except OSError:
                return  # the replica is gone; the main thread notices on its own pipe


class EngineLoop:
    def __init__(self, core: EngineCore, inbox: Connection, sender: Sender) -> None:
        self.core, self.sender = core, sender
        self.inbox: queue.SimpleQueue[ToEngine | None] = queue.SimpleQueue()
        receiver = threading.Thread(
            target=self._receive, args=(inbox,), name="engine-receiver", daemon=True
        )
        receiver.start()

    def run(self) -> None:
        idle_reported = True
        while True:
            idle = idle_reported and not self.core.has_work()
            for message in self._take(wait=idle and not self.core.has_graphs_to_capture()):
                if not self._handle(message):
                    return
            if idle and not self.core.has_work() and self.core.has_graphs_to_capture():
                if done := self.core.capture_next():  # a request arriving now waits for one graph
                    print(f"engine: {done.count} CUDA graphs captured in {done.seconds:.1f} s, "
                          "between requests", flush=True)  # fmt: skip
                    self.sender.put(done)
                continue
            outputs = self.core.step()
            idle = not self.core.has_work()
            if outputs or (idle and not idle_reported):  # an abort can make it idle
                self.sender.put(self.core.report(outputs))
            idle_reported = idle

    def _take(self, wait: bool) -> list[ToEngine | None]:
        """Every message waiting; with `wait`, block for the first one (the engine is idle)."""
        messages = [self.inbox.get()] if wait else []
        while not self.inbox.empty():
            messages.append(self.inbox.get())
        return messages

    def _handle(self, message: ToEngine | None) -> bool:
        """Apply one message; False when the engine must stop."""
        if isinstance(message, AddRequest):
            self.core.add(message)
        elif isinstance(message, AbortRequests):
            self.core.abort(message.request_ids)
        elif isinstance(message, Control) and message.command != "shutdown":
            start = time.perf_counter()
            self.core.sleep() if message.command == "sleep" else self.core.wake_up()
            self.sender.put(ControlDone(message.command, time.perf_counter() - start))
        else:
            return False  # shutdown, or None: the replica's end closed
        return True

    def _receive(self, inbox: Connection) -> None:
        while True:
            try:
                self.inbox.put(inbox.recv())
            except (EOFError, OSError):
                self.inbox.put(None)
                return
