"""PriceTable: USD per second of a GPU of each type, of a CPU core and of a GiB of memory.

The defaults are public serverless rates; `ember server --prices prices.toml` overrides any of
them:

    cpu_core = 0.0000131      # USD per core-second
    memory_gib = 0.00000222   # USD per GiB-second

    [gpu]                     # USD per GPU-second, by type (ember/resources.py spells them)
    H100 = 0.001097
    "A100-80GB" = 0.000694

A negative or non-numeric price, an unknown key or an unknown GPU type is refused with the valid
choices.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ember.resources import ALIASES, GPU_TYPES

DEFAULT_GPU = {
    "B200": 0.001736,
    "H200": 0.001261,
    "H100": 0.001097,
    "A100-80GB": 0.000694,
    "A100-40GB": 0.000583,
    "L40S": 0.000542,
    "A10G": 0.000306,
    "L4": 0.000222,
    "T4": 0.000164,
}
DEFAULT_CPU_CORE = 0.0000131
DEFAULT_MEMORY_GIB = 0.00000222
# What a replica that asks for no CPU or memory is billed for (Modal's minimum request).
MIN_CPU = 0.125
MIN_MEMORY_MIB = 128


class PriceError(ValueError):
    """A price table that cannot be used; the message names the entry and the valid choices."""


@dataclass(frozen=True)
class PriceTable:
    gpu: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_GPU))
    cpu_core: float = DEFAULT_CPU_CORE
    memory_gib: float = DEFAULT_MEMORY_GIB

    def rate(self, gpu_type: str | None, gpus: int, cpu: float, memory_mib: int) -> float:
        """USD per second for these resources; a GPU type without a price costs nothing."""
        gpu = self.gpu.get(gpu_type, 0.0) * gpus if gpu_type else 0.0
        return gpu + cpu * self.cpu_core + memory_mib / 1024 * self.memory_gib

    def as_dict(self) -> dict[str, object]:
        return {"gpu": dict(self.gpu), "cpu_core": self.cpu_core, "memory_gib": self.memory_gib}

    @classmethod
    def load(cls, path: Path) -> PriceTable:
        """The defaults, overridden by the TOML file at `path`; PriceError says what is wrong."""
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise PriceError(f"cannot read the price table {path}: {exc}") from None
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "prices") -> PriceTable:
        unknown = set(data) - {"gpu", "cpu_core", "memory_gib"}
        if unknown:
            raise PriceError(
                f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: cpu_core, memory_gib "
                "and a [gpu] table of prices by GPU type"
            )
        gpu = dict(DEFAULT_GPU)
        gpu_table = data.get("gpu", {})
        if not isinstance(gpu_table, Mapping):
            raise PriceError(f"{where}: gpu must be a table of prices by GPU type")
        for name, value in gpu_table.items():
            gpu[_gpu_type(name, where)] = _price(value, f"gpu.{name}", where)
        return cls(
            gpu=gpu,
            cpu_core=_price(data.get("cpu_core", DEFAULT_CPU_CORE), "cpu_core", where),
            memory_gib=_price(data.get("memory_gib", DEFAULT_MEMORY_GIB), "memory_gib", where),
        )


def _gpu_type(name: str, where: str) -> str:
    canonical = ALIASES.get(name.upper(), name.upper())
    if canonical not in GPU_TYPES:
        raise PriceError(f"{where}: unknown GPU type {name!r}; valid types: {', '.join(GPU_TYPES)}")
    return canonical


def _price(value: object, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceError(f"{where}: {key} must be a number of USD per second, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise PriceError(f"{where}: {key} must be a finite price of 0 or more, got {value!r}")
    return float(value)
