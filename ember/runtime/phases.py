"""How long each phase of a replica's start took, reported to the server with `ready`.

The runtime times its own phases (imports, snap hooks, enter hooks); code it runs may add its
own, e.g. an engine's weight load or CUDA-graph capture:

    from ember.runtime import phases

    with phases.timed("weight load"):
        load_weights()
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

_recorded: dict[str, float] = {}


def record(name: str, seconds: float) -> None:
    _recorded[name] = _recorded.get(name, 0.0) + seconds


@contextmanager
def timed(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, time.perf_counter() - start)


def take() -> dict[str, float]:
    """What was recorded since the last call (a forked replica starts from the template's)."""
    recorded = dict(_recorded)
    _recorded.clear()
    return {name: round(seconds, 4) for name, seconds in recorded.items()}
