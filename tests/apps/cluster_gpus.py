"""A function for a Ray cluster whose two workers have two (declared) H100 each."""

import os

import ember

app = ember.App("cluster-gpus")


@app.function(gpu="H100:2", min_containers=2, scaledown_window=60)
def two_gpus() -> str:
    """A whole worker's GPUs: one replica per worker node."""
    return os.environ["CUDA_VISIBLE_DEVICES"]
