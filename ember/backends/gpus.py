"""The GPUs of this host: found through NVML or `nvidia-smi`, or declared with `--gpus`.

`--gpus` takes `none`, indices to keep (`0,2`), or GPUs to declare (`H100:4`, `H100:2,T4:1`):
declared GPUs are how a machine without one runs and tests GPU functions (their replicas get
`CUDA_VISIBLE_DEVICES` like real ones; there is simply nothing behind the indices).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from ember.backends.base import Gpu
from ember.resources import GPU_TYPES, ResourceError, gpu_type_of, parse_gpu


class GpuFlagError(ValueError):
    """A `--gpus` value that cannot be understood."""


def host_gpus(flag: str | None) -> list[Gpu]:
    """The GPUs replicas may use, given the `--gpus` flag (None: every GPU found)."""
    if flag is None:
        return discover()
    flag = flag.strip()
    if flag.lower() == "none":
        return []
    if re.fullmatch(r"\d+(,\d+)*", flag):
        return _keep(discover(), [int(i) for i in flag.split(",")])
    return declared(flag)


def discover() -> list[Gpu]:
    """GPUs the NVIDIA driver reports; none without a driver."""
    try:
        return _from_nvml()
    except (ImportError, OSError, RuntimeError):  # no nvidia-ml-py, no driver library
        pass
    return _from_nvidia_smi()


def _from_nvml() -> list[Gpu]:
    import pynvml  # nvidia-ml-py

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise RuntimeError(str(exc)) from exc
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20
            gpus.append(Gpu(index, gpu_type_of(name), name, int(memory)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[Gpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        index, name, memory = (part.strip() for part in line.split(","))
        gpus.append(Gpu(int(index), gpu_type_of(name), name, int(float(memory))))
    return gpus


def declared(flag: str) -> list[Gpu]:
    """`H100:2,T4:1` -> GPUs 0 and 1 of type H100, GPU 2 of type T4."""
    gpus: list[Gpu] = []
    for entry in flag.split(","):
        try:
            request = parse_gpu(entry)
        except ResourceError:
            request = None
        option = request.options[0] if request else None
        if option is None or not option.types:
            raise GpuFlagError(
                f"--gpus {flag!r}: {entry!r} is not a GPU type with a count; use 'none', "
                f"indices such as '0,1', or types such as 'H100:4' ({', '.join(GPU_TYPES)})"
            )
        for _ in range(option.count):
            gpus.append(Gpu(len(gpus), option.types[0], f"declared {option.types[0]}"))
    return gpus


def _keep(found: list[Gpu], indices: list[int]) -> list[Gpu]:
    by_index = {gpu.index: gpu for gpu in found}
    missing = [i for i in indices if i not in by_index]
    if missing:
        present = ", ".join(str(i) for i in by_index) or "none"
        raise GpuFlagError(
            f"--gpus: no GPU with index {missing[0]} on this host (found: {present})"
        )
    return [by_index[i] for i in indices]
