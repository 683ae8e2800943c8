"""Functions that ask for GPUs, for a server started with declared ones (`--gpus H100:4`)."""

import os
import time
from pathlib import Path

import ember

app = ember.App("gpus")


@app.function(gpu="H100", max_containers=8, scaledown_window=30)
def hold(folder: str, release: str) -> str:
    """Note the GPUs this replica was given, then hold its GPU until the test lets go."""
    devices = os.environ["CUDA_VISIBLE_DEVICES"]
    Path(folder, os.environ["EMBER_REPLICA_ID"]).write_text(devices)
    while not os.path.exists(release):
        time.sleep(0.05)
    return devices


@app.function(gpu=["A100-80GB", "H100"])
def devices() -> str:
    return os.environ["CUDA_VISIBLE_DEVICES"]


@app.function()
def environment() -> dict[str, str]:
    return dict(os.environ)
