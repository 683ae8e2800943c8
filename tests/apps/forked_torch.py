"""torch's CPU kernels in a template's snap hook and again in each replica forked from it."""

import ember

app = ember.App("forked-torch")


@app.cls(enable_memory_snapshot=True, timeout=120)  # a hung replica fails the call
class Weights:
    @ember.enter(snap=True)
    async def load(self) -> None:  # async: on the template's main thread
        import torch

        self.weights = torch.ones(4_000_000)
        self.weights.add_(1)  # a parallel kernel: OpenMP's thread pool, in the template

    @ember.method()
    async def total(self) -> float:  # on the forked replica's main thread
        return float(self.weights.mul(2).sum())  # parallel kernels again
