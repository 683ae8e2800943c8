"""The CUDA driver's process checkpoint: a process's whole GPU state moved to host memory and back.

cuCheckpointProcessLock / Checkpoint release every byte of GPU memory a process holds, context
included (the driver keeps it in host memory); Restore / Unlock put it back on the same GPU. Called
from the server on a replica's processes (drivers of CUDA 12.8 and later; NVIDIA's
`cuda-checkpoint` tool does the same). Where the driver has no such API, `available()` says why.
"""

from __future__ import annotations

import ctypes
import functools

from ember.backends.base import CheckpointError

CUDA_SUCCESS = 0
CUDA_ERROR_NOT_INITIALIZED = 3  # a process without a CUDA context
CU_PROCESS_STATE_RUNNING = 0
CU_PROCESS_STATE_LOCKED = 1
CU_PROCESS_STATE_CHECKPOINTED = 2


@functools.cache
def _driver() -> ctypes.CDLL | str:
    """The driver library, initialised, or why it cannot be used."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1) on this host"
    if not hasattr(lib, "cuCheckpointProcessCheckpoint"):
        return "this NVIDIA driver has no process checkpoint API (it needs CUDA 12.8 or later)"
    code = lib.cuInit(0)  # the driver only: no context is made in the server
    if code != CUDA_SUCCESS:
        return f"cuInit failed with CUDA error {code}"
    return lib


def available() -> str | None:
    """None if processes can be checkpointed here, else why not."""
    driver = _driver()
    return driver if isinstance(driver, str) else None


def has_cuda(pid: int) -> bool:
    """Whether the process holds a CUDA context (only those are checkpointed)."""
    state = ctypes.c_int()
    return bool(_lib().cuCheckpointProcessGetState(pid, ctypes.byref(state)) == CUDA_SUCCESS)


def checkpoint(pid: int) -> None:
    """Lock the process's CUDA calls, then move its GPU state to host memory."""
    lib = _lib()
    _check(lib.cuCheckpointProcessLock(pid, None), "lock", pid)
    try:
        _check(lib.cuCheckpointProcessCheckpoint(pid, None), "checkpoint", pid)
    except CheckpointError:
        lib.cuCheckpointProcessUnlock(pid, None)
        raise


def restore(pid: int) -> None:
    """Put the process's GPU state back, then let its CUDA calls run."""
    lib = _lib()
    _check(lib.cuCheckpointProcessRestore(pid, None), "restore", pid)
    _check(lib.cuCheckpointProcessUnlock(pid, None), "unlock", pid)


def _lib() -> ctypes.CDLL:
    driver = _driver()
    if isinstance(driver, str):
        raise CheckpointError(driver)
    return driver


def _check(code: int, what: str, pid: int) -> None:
    if code != CUDA_SUCCESS:
        raise CheckpointError(f"cuCheckpointProcess {what} of process {pid}: CUDA error {code}")
