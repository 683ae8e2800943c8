"""Probe: does pinned host memory in a process make the CUDA driver's restore of it slower?

A child makes a CUDA context, holds `pinned` GB of pinned host memory (and a little GPU memory),
and waits; the parent checkpoints and restores it three times per size.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ember.backends import cuda_checkpoint


def child(pinned_gb: float, registered: bool, ready, done) -> None:  # type: ignore[no-untyped-def]
    import torch

    x = torch.ones(1 << 20, device="cuda")
    size = int(pinned_gb * 1e9)
    if size and registered:
        host = torch.empty(size, dtype=torch.uint8)
        torch.cuda.cudart().cudaHostRegister(host.data_ptr(), size, 0)
    elif size:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
    torch.cuda.synchronize()
    ready.set()
    done.wait()
    print("child ok", float(x.sum()), flush=True)


def main() -> None:
    ctx = multiprocessing.get_context("spawn")
    for pinned, registered in ((0, False), (1, False), (16, False), (16, True)):
        ready, done = ctx.Event(), ctx.Event()
        p = ctx.Process(target=child, args=(pinned, registered, ready, done))
        p.start()
        ready.wait()
        ck, rs = [], []
        for _ in range(3):
            t = time.perf_counter()
            cuda_checkpoint.checkpoint(p.pid)
            ck.append(time.perf_counter() - t)
            t = time.perf_counter()
            cuda_checkpoint.restore(p.pid)
            rs.append(time.perf_counter() - t)
        done.set()
        p.join()
        how = "cudaHostRegister" if registered else "pin_memory"
        print(
            f"pinned {pinned} GB ({how}): checkpoint {statistics.median(ck):.3f} s, "
            f"restore {statistics.median(rs):.3f} s (restores {[round(r, 3) for r in rs]})",
            flush=True,
        )


if __name__ == "__main__":
    main()
