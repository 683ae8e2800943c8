"""Memory snapshots and parking, as users write them; each hook leaves a line in MARKS."""

import os
import sys
import types
from pathlib import Path

import ember

MARKS = os.environ.get("EMBER_TEST_MARKS", "/tmp/ember-test-marks")
app = ember.App("snapshots", image=ember.Image.debian_slim().env({"EMBER_TEST_MARKS": MARKS}))


def mark(text: str) -> None:
    with open(MARKS, "a") as f:
        f.write(f"{text} {os.environ.get('EMBER_REPLICA_ID', '?')}\n")


@app.cls(enable_memory_snapshot=True, scaledown_window=30)
class Forked:
    @ember.enter(snap=True)
    def load(self) -> None:
        self.table = {i: i * i for i in range(10_000)}  # made once, in the template
        mark("snap")

    @ember.enter()
    def start(self) -> None:
        mark("enter")

    @ember.method()
    def lookup(self, key: int) -> tuple[int, str]:
        return self.table[key], os.environ["EMBER_REPLICA_ID"]


@app.cls(enable_memory_snapshot=True)
class TouchesCuda:
    @ember.enter(snap=True)
    def load(self) -> None:
        # This machine has no GPU: a stand-in for torch whose CUDA is initialised, as it would be
        # after `torch.zeros(1, device="cuda")` (not ours, and it cannot run here).
        fake = types.ModuleType("torch")
        fake.cuda = types.SimpleNamespace(is_initialized=lambda: True)  # type: ignore[attr-defined]
        sys.modules.setdefault("torch", fake)

    @ember.method()
    def ping(self) -> str:
        return "pong"


@app.cls(enable_memory_snapshot=True)
class FailsInTemplate:
    @ember.enter(snap=True)
    def load(self) -> None:
        if Path(MARKS + ".fail").exists():
            raise RuntimeError("no weights in the template's folder")

    @ember.method()
    def ping(self) -> str:
        return "pong"


@app.cls(gpu_snapshot=True, scaledown_window=1)
class Parks:
    @ember.enter()
    def start(self) -> None:
        self.awake = True

    @ember.before_park()
    def sleep(self) -> None:
        self.awake = False
        mark("park")

    @ember.after_restore()
    def wake(self) -> None:
        if Path(MARKS + ".fail").exists():
            raise RuntimeError("could not wake up")
        self.awake = True
        mark("restore")

    @ember.method()
    def hello(self) -> tuple[bool, str]:
        return self.awake, os.environ["EMBER_REPLICA_ID"]
