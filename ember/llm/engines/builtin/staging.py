"""Copies between host and GPU memory through pinned staging buffers, several lanes at once.

A copy from pageable host memory runs at 7-8 GB/s on an H100 host: the driver stages it through
a small pinned buffer of its own, reading and transferring in turn. A `Stager` has lanes of its
own instead: each lane is a thread with two pinned buffers and a CUDA stream, which fills one
buffer (a memcpy, run by torch without the GIL) while the copy engine drains the other, and the
lanes' memcpys run side by side (36 GB/s for 16 GB on an H100 host, bench/weights.py).

The weights stay in pageable memory while the engine sleeps: pinned memory is fast to copy but
slow to make (about 0.6 s per GB), and the CUDA driver's restore of a checkpointed process takes
longer the more pinned memory it holds (1.07 s with 16 GB, 0.25 s with none).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

CHUNK_BYTES = 8 << 20
LANES = 4

# (source, destination): contiguous uint8 tensors of the same length, one on the host and one on
# the GPU.
Piece = tuple[torch.Tensor, torch.Tensor]


def as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor's memory as a flat uint8 tensor (no copy)."""
    return tensor.reshape(-1).view(torch.uint8)


def split(pieces: Sequence[Piece], chunk: int = CHUNK_BYTES) -> list[Piece]:
    """`pieces` cut into parts of at most `chunk` bytes, in order."""
    parts = []
    for source, target in pieces:
        if source.numel() != target.numel():
            raise ValueError(f"a {source.numel()}-byte source for a {target.numel()}-byte target")
        for start in range(0, source.numel(), chunk):
            parts.append((source[start : start + chunk], target[start : start + chunk]))
    return parts


class Stager:
    """Lanes made once (their buffers pinned for the stager's life) for every copy it makes."""

    def __init__(self, device: torch.device, lanes: int = LANES, chunk: int = CHUNK_BYTES):
        self.chunk = chunk
        self.lanes = [_Lane(device, chunk) for _ in range(lanes)]

    def upload(self, pieces: Sequence[Piece]) -> None:
        """Copy each (host, GPU) piece to the GPU; returns once every byte has landed."""
        self._run(pieces, _Lane.upload)

    def download(self, pieces: Sequence[Piece]) -> None:
        """Copy each (GPU, host) piece to the host; returns once every byte has landed."""
        self._run(pieces, _Lane.download)

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()

    def _run(self, pieces: Sequence[Piece], copy: Callable[[_Lane, list[Piece]], None]) -> None:
        parts = split(pieces, self.chunk)
        count = len(self.lanes)
        errors: list[BaseException] = []

        def run(lane: _Lane, share: list[Piece]) -> None:
            try:
                copy(lane, share)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(lane, parts[i::count]), name="ember-stager")
            for i, lane in enumerate(self.lanes)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]


class _Lane:
    """Two pinned buffers, a stream, and an event per buffer that says the copy engine is done
    with it."""

    def __init__(self, device: torch.device, chunk: int) -> None:
        self.device, self.chunk = device, chunk
        self.memory = torch.empty(2 * chunk, dtype=torch.uint8)
        _pin(self.memory)
        self.buffers = (self.memory[:chunk], self.memory[chunk:])
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self.done = [torch.cuda.Event(), torch.cuda.Event()]  # type: ignore[no-untyped-call]

    def upload(self, parts: list[Piece]) -> None:
        # One stream context for all the parts: entering one asks the driver for the device
        # count (0.3 ms, holding the GIL), which made per-part contexts the bottleneck.
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for i, (host, gpu) in enumerate(parts):
                slot = i % 2
                self.done[slot].synchronize()  # the copy engine has drained this buffer
                buffer = self.buffers[slot][: host.numel()]
                buffer.copy_(host)
                gpu.copy_(buffer, non_blocking=True)
                self.done[slot].record(self.stream)
            self.stream.synchronize()

    def download(self, parts: list[Piece]) -> None:
        """Each part's transfer is started before the previous part is copied out of its buffer."""
        waiting: tuple[int, torch.Tensor, torch.Tensor] | None = None
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            for i, (gpu, host) in enumerate(parts):
                slot = i % 2
                buffer = self.buffers[slot][: gpu.numel()]
                buffer.copy_(gpu, non_blocking=True)
                self.done[slot].record(self.stream)
                if waiting is not None:
                    self._copy_out(*waiting)
                waiting = (slot, buffer, host)
            if waiting is not None:
                self._copy_out(*waiting)

    def _copy_out(self, slot: int, buffer: torch.Tensor, host: torch.Tensor) -> None:
        self.done[slot].synchronize()
        host.copy_(buffer)

    def close(self) -> None:
        runtime = torch.cuda.cudart()  # type: ignore[no-untyped-call]
        _check(runtime.cudaHostUnregister(self.memory.data_ptr()))


def _pin(memory: torch.Tensor) -> None:
    runtime = torch.cuda.cudart()  # type: ignore[no-untyped-call]
    _check(runtime.cudaHostRegister(memory.data_ptr(), memory.numel(), 0))


def _check(result: object) -> None:
    code = int(result)  # type: ignore[call-overload]
    if code != 0:
        raise RuntimeError(f"pinning a staging buffer for the weights failed (cudaError {code})")
