"""Functions for a Ray cluster of three nodes (tests/integration/test_ray.py)."""

import os
import time
from pathlib import Path

import ember

app = ember.App("cluster")


@app.function(min_containers=3, scaledown_window=60)
def spread() -> str:
    """Held warm on three replicas, which Ray spreads over the nodes."""
    return os.environ["EMBER_REPLICA_ID"]


def _hold(x: int, folder: str, release: str) -> int:
    """Note which replica took input `x`, then hold it until the test lets go."""
    Path(folder, os.environ["EMBER_REPLICA_ID"]).write_text(str(x))
    while not os.path.exists(release):
        time.sleep(0.05)
    return x * x


@app.function(
    retries=ember.Retries(max_retries=3, initial_delay=0.5), max_containers=4, scaledown_window=60
)
def held(x: int, folder: str, release: str) -> int:
    return _hold(x, folder, release)


@app.function(max_containers=4, scaledown_window=60)
def held_once(x: int, folder: str, release: str) -> int:
    """No retries: an input lost with its node fails, and says so."""
    return _hold(x, folder, release)


@app.function(scaledown_window=1)
def idle() -> str:
    return os.environ["EMBER_REPLICA_ID"]
