"""Memory the engine gives back while asleep and takes again at the same addresses.

CUDA graphs record the addresses of the weights and of the KV cache. To free the GPU while asleep
and still replay the graphs after waking, both live in a `DeviceRegion`: a range of virtual
addresses reserved once, with physical memory mapped under it through CUDA's virtual memory API
(called with ctypes). Sleeping unmaps and releases the physical memory; waking maps new memory at
the same addresses. On the CPU, and for scratch space, a `TensorRegion` is a plain tensor that
is dropped and allocated again.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from ember.llm.engines.builtin import staging

_PINNED = 1  # CU_MEM_ALLOCATION_TYPE_PINNED
_ON_DEVICE = 1  # CU_MEM_LOCATION_TYPE_DEVICE
_READ_WRITE = 3  # CU_MEM_ACCESS_FLAGS_PROT_READWRITE
_RECOMMENDED = 1  # CU_MEM_ALLOC_GRANULARITY_RECOMMENDED


class DeviceMemoryError(RuntimeError):
    """A CUDA driver call on the engine's memory failed."""


class _Location(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class _AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class _AllocationProp(ctypes.Structure):  # CUmemAllocationProp
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", _Location),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", _AllocFlags),
    ]


class _AccessDesc(ctypes.Structure):  # CUmemAccessDesc
    _fields_ = [("location", _Location), ("flags", ctypes.c_int)]


class _Driver:
    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")

    def __call__(self, name: str, *args: Any) -> None:
        result = getattr(self.lib, name)(*args)
        if result != 0:
            text = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(text))
            reason = text.value.decode() if text.value else "unknown error"
            raise DeviceMemoryError(f"{name} failed: {reason} (CUresult {result})")


class _CudaArray:
    """Exposes raw device memory to torch.as_tensor without copying."""

    def __init__(self, address: int, size: int) -> None:
        self.__cuda_array_interface__ = {
            "shape": (size,), "typestr": "|u1", "data": (address, False), "version": 3,
        }  # fmt: skip


class DeviceRegion:
    """`size` bytes of GPU memory at fixed virtual addresses, releasable while asleep."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.driver = _Driver()
        index = device.index if device.index is not None else torch.cuda.current_device()
        self.prop = _AllocationProp(type=_PINNED, location=_Location(_ON_DEVICE, index))
        self.access = _AccessDesc(location=_Location(_ON_DEVICE, index), flags=_READ_WRITE)
        granularity = ctypes.c_size_t()
        self.driver(
            "cuMemGetAllocationGranularity",
            ctypes.byref(granularity), ctypes.byref(self.prop), ctypes.c_int(_RECOMMENDED),
        )  # fmt: skip
        self.size = -(-max(size, 1) // granularity.value) * granularity.value
        address = ctypes.c_uint64()
        self.driver(
            "cuMemAddressReserve",
            ctypes.byref(address), ctypes.c_size_t(self.size), ctypes.c_size_t(0),
            ctypes.c_uint64(0), ctypes.c_uint64(0),
        )  # fmt: skip
        self.address = address.value
        self.handle: ctypes.c_uint64 | None = None
        self.restore()
        self.tensor = torch.as_tensor(_CudaArray(self.address, self.size), device=device)

    def restore(self) -> None:
        """Map physical memory under the addresses again (its contents are undefined)."""
        if self.handle is not None:
            return
        handle = ctypes.c_uint64()
        self.driver(
            "cuMemCreate",
            ctypes.byref(handle), ctypes.c_size_t(self.size), ctypes.byref(self.prop),
            ctypes.c_uint64(0),
        )  # fmt: skip
        at, size = ctypes.c_uint64(self.address), ctypes.c_size_t(self.size)
        self.driver("cuMemMap", at, size, ctypes.c_size_t(0), handle, ctypes.c_uint64(0))
        self.driver("cuMemSetAccess", at, size, ctypes.byref(self.access), ctypes.c_size_t(1))
        self.handle = handle

    def release(self) -> None:
        """Give the physical memory back; nothing may touch `tensor` until `restore`."""
        if self.handle is None:
            return
        torch.cuda.synchronize()
        self.driver("cuMemUnmap", ctypes.c_uint64(self.address), ctypes.c_size_t(self.size))
        self.driver("cuMemRelease", self.handle)
        self.handle = None


class TensorRegion:
    """A plain tensor of `size` bytes, dropped on release and allocated again on restore."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.size, self.device = size, device
        self.tensor = torch.empty(size, dtype=torch.uint8, device=device)

    def release(self) -> None:
        self.tensor = torch.empty(0, dtype=torch.uint8, device=self.device)

    def restore(self) -> None:
        if self.tensor.numel() != self.size:
            self.tensor = torch.empty(self.size, dtype=torch.uint8, device=self.device)


class PackedWeights:
    """A model's parameters packed into one region, with a host copy while asleep."""

    ALIGNMENT = 256  # bytes: each parameter's slice views cleanly as its dtype

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        params = list(model.parameters())  # shared (tied) parameters appear once
        offsets, end = [], 0
        for p in params:
            offsets.append(end)
            end += -(-p.numel() * p.element_size() // self.ALIGNMENT) * self.ALIGNMENT
        self.used = end
        self.region = DeviceRegion(end, device)
        self.stager = staging.Stager(device)
        pieces = []
        for p, offset in zip(params, offsets, strict=True):
            target = self.region.tensor[offset : offset + p.nbytes]
            pieces.append((staging.as_bytes(p.data.contiguous()), target))
        self.stager.upload(pieces)
        for p, (_, target) in zip(params, pieces, strict=True):
            p.data = target.view(p.dtype).view(p.shape)  # this process's host copy is dropped
        torch.cuda.empty_cache()
        self.host: torch.Tensor | None = None  # pageable: see staging.py for why

    def park(self) -> None:
        if self.host is None:
            self.host = torch.empty(self.used, dtype=torch.uint8)
        self.stager.download([(self.region.tensor[: self.used], self.host)])
        self.region.release()

    def restore(self) -> None:
        self.region.restore()
        assert self.host is not None, "restore without park"
        self.stager.upload([(self.host, self.region.tensor[: self.used])])
