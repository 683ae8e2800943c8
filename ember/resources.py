"""What a function asks of a machine: GPUs in Modal's forms, CPU cores and memory, parsed once.

`gpu=` takes Modal's spellings: a type (`"H100"`, `"a100-80gb"`), a type and a count
(`"A100-80GB:2"`), `"any"`, or a fallback list tried in order (`["H100", "A100-80GB:2"]`). As on
Modal, `"H100"` may run on an H200 and `"A100"` on an A100-80GB; a `!` (`"H100!"`) forbids that.
Neutral: the SDK validates with it, the server places replicas with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Canonical type -> the types a request for it may run on, best first.
GPU_TYPES: dict[str, tuple[str, ...]] = {
    "T4": ("T4",),
    "L4": ("L4",),
    "A10G": ("A10G",),
    "A100-40GB": ("A100-40GB", "A100-80GB"),
    "A100-80GB": ("A100-80GB",),
    "L40S": ("L40S",),
    "H100": ("H100", "H200"),
    "H200": ("H200",),
    "B200": ("B200",),
}
ALIASES = {"A10": "A10G", "A100": "A100-40GB"}
ANY = "any"
MAX_GPUS = 8
_ENTRY = re.compile(r"^(?P<type>[A-Za-z0-9-]+)(?P<exact>!)?(?::(?P<count>\d+))?$")


class ResourceError(ValueError):
    """A resource request that cannot be understood; the message shows valid forms."""


@dataclass(frozen=True)
class GpuOption:
    """One entry of a request: `count` GPUs, all of one type among `types` (empty: any type)."""

    types: tuple[str, ...]
    count: int

    def accepts(self, gpu_type: str) -> bool:
        return not self.types or gpu_type in self.types

    def __str__(self) -> str:
        kind = "/".join(self.types) if self.types else ANY
        return f"{kind}:{self.count}" if self.count > 1 else kind


@dataclass(frozen=True)
class GpuRequest:
    """A `gpu=` option, parsed: the options in the order they are tried."""

    options: tuple[GpuOption, ...]

    def __str__(self) -> str:
        return " or ".join(str(option) for option in self.options)


def parse_gpu(value: str | list[str] | tuple[str, ...] | None) -> GpuRequest | None:
    """The request `value` spells, or None for no GPU; ResourceError says what is wrong."""
    if value is None:
        return None
    entries = [value] if isinstance(value, str) else list(value)
    if not entries or not all(isinstance(e, str) for e in entries):
        raise ResourceError(f"gpu must be a string or a non-empty list of strings, got {value!r}")
    return GpuRequest(tuple(_parse_entry(entry) for entry in entries))


def _parse_entry(entry: str) -> GpuOption:
    match = _ENTRY.match(entry.strip())
    if match is None:
        raise ResourceError(_unknown(entry))
    count = int(match["count"] or 1)
    if not 1 <= count <= MAX_GPUS:
        raise ResourceError(f"gpu {entry!r}: the count must be between 1 and {MAX_GPUS}")
    name = match["type"].upper()
    if name == ANY.upper():
        return GpuOption((), count)
    name = ALIASES.get(name, name)
    if name not in GPU_TYPES:
        raise ResourceError(_unknown(entry))
    return GpuOption((name,) if match["exact"] else GPU_TYPES[name], count)


def _unknown(entry: str) -> str:
    return (
        f"unknown gpu {entry!r}: use a type ({', '.join(GPU_TYPES)}), 'any', a count such as "
        "'H100:2', or a list tried in order such as ['H100', 'A100-80GB']"
    )


def gpu_type_of(device_name: str) -> str:
    """The canonical type of a device as the driver names it ("NVIDIA H100 80GB HBM3" -> H100)."""
    name = device_name.upper()
    if "A100" in name:
        return "A100-80GB" if "80G" in name else "A100-40GB"
    for gpu_type in ("H200", "H100", "B200", "L40S", "A10G", "L4", "T4"):
        if gpu_type in name:
            return gpu_type
    if re.search(r"\bA10\b", name):
        return "A10G"
    return device_name.strip()  # an unknown device: only gpu="any" (or its exact name) takes it


@dataclass(frozen=True)
class Resources:
    """Everything a replica of one function asks for."""

    gpu: GpuRequest | None = None
    cpu: float | None = None  # cores
    memory: int | None = None  # MiB

    @classmethod
    def of(cls, gpu: str | list[str] | None, cpu: float | None, memory: int | None) -> Resources:
        return cls(parse_gpu(gpu), cpu, memory)
