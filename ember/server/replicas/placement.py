"""Where pending replicas run: GPUs and CPU cores, decided by a pure function over a snapshot.

`place` hands free GPUs to pending replicas, most urgent first: a replica of a pool that has
inputs waiting and no live replica comes before one that only grows a pool, then the oldest
first. A request that does not fit now stays pending (its inputs wait; nothing fails) and does
not block smaller ones behind it. Cores are never scarce: a replica that asks for `cpu=N` is
pinned to the N least-loaded cores, shared if need be. `Inventory` holds what is leased.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ember import wire
from ember.backends.base import Capabilities, Gpu
from ember.resources import GpuOption, GpuRequest, Resources


@dataclass(frozen=True)
class Claim:
    """A pending replica's request."""

    replica_id: str
    gpu: GpuRequest | None
    cpu: float | None
    urgent: bool  # its pool has inputs waiting and no live replica
    since: float  # when it was created


@dataclass(frozen=True)
class Placement:
    gpus: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()


def place(
    claims: Iterable[Claim], free_gpus: Sequence[Gpu], core_load: Mapping[int, int]
) -> dict[str, Placement]:
    """Placements for the claims that fit; the others stay pending."""
    free = list(free_gpus)
    load = dict(core_load)
    placed: dict[str, Placement] = {}
    for claim in sorted(claims, key=lambda c: (not c.urgent, c.since)):
        gpus = _take_gpus(claim.gpu, free) if claim.gpu is not None else ()
        if gpus is None:
            continue
        placed[claim.replica_id] = Placement(gpus, _take_cores(claim.cpu, load))
    return placed


def _take_gpus(request: GpuRequest, free: list[Gpu]) -> tuple[int, ...] | None:
    """The first option of the request that fits, on its best type; the GPUs leave `free`."""
    for option in request.options:
        chosen = _fit(option, free)
        if chosen is not None:
            for gpu in chosen:
                free.remove(gpu)
            return tuple(gpu.index for gpu in chosen)
    return None


def _fit(option: GpuOption, free: list[Gpu]) -> list[Gpu] | None:
    """`option.count` free GPUs of one type, all in one machine (a cluster has several)."""
    for gpu_type in option.types or sorted({gpu.type for gpu in free}):
        of_type = [gpu for gpu in free if gpu.type == gpu_type]
        for node in sorted({gpu.node for gpu in of_type}):
            on_node = [gpu for gpu in of_type if gpu.node == node]
            if len(on_node) >= option.count:
                return on_node[: option.count]
    return None


def _take_cores(cpu: float | None, load: dict[int, int]) -> tuple[int, ...]:
    if not cpu or not load:
        return ()
    wanted = min(math.ceil(cpu), len(load))
    chosen = sorted(load, key=lambda core: (load[core], core))[:wanted]
    for core in chosen:
        load[core] += 1
    return tuple(sorted(chosen))


def fits_ever(request: GpuRequest, gpus: Sequence[Gpu]) -> bool:
    """Whether the host could run the request with every GPU free (else: fail the deploy)."""
    return _take_gpus(request, list(gpus)) is not None


@dataclass
class Inventory:
    """The host's GPUs and cores, and which replica holds which."""

    gpus: tuple[Gpu, ...]
    cores: tuple[int, ...]
    _gpu_holders: dict[int, str] = field(default_factory=dict)
    _core_holders: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def free_gpus(self) -> list[Gpu]:
        return [gpu for gpu in self.gpus if gpu.index not in self._gpu_holders]

    def all_free(self, indices: Iterable[int]) -> bool:
        return not any(index in self._gpu_holders for index in indices)

    def core_load(self) -> dict[int, int]:
        load = dict.fromkeys(self.cores, 0)
        for held in self._core_holders.values():
            for core in held:
                load[core] += 1
        return load

    def lease(self, replica_id: str, placement: Placement) -> None:
        for index in placement.gpus:
            self._gpu_holders[index] = replica_id
        if placement.cpus:
            self._core_holders[replica_id] = placement.cpus

    def release(self, replica_id: str) -> None:
        for index in [i for i, holder in self._gpu_holders.items() if holder == replica_id]:
            del self._gpu_holders[index]
        self._core_holders.pop(replica_id, None)


class Unplaceable(Exception):
    """This host can never give a function what it asks for; the message says what it has."""


def resolve_resources(
    spec: wire.FunctionSpec, capabilities: Capabilities, gpu_fallback: bool
) -> tuple[Resources, list[str]]:
    """What replicas of `spec` get on this host, and what the deploy should say about it."""
    resources = Resources.of(spec.gpu, spec.cpu, spec.memory)
    notes: list[str] = []
    gpus = capabilities.gpus
    if resources.gpu is not None and not fits_ever(resources.gpu, gpus):
        host = f"{capabilities.where} has {describe_gpus(gpus)}"
        if not gpu_fallback:
            raise Unplaceable(
                f"{spec.name} asks for gpu {resources.gpu}, and {host}; deploy it where such "
                "GPUs are, or start the server with --gpu-fallback cpu to run it on the CPU"
            )
        notes.append(f"{spec.name} asks for gpu {resources.gpu}, and {host}: it runs on the CPU")
        resources = Resources(None, resources.cpu, resources.memory)
    if resources.cpu is not None and resources.cpu > capabilities.cores:
        notes.append(
            f"{spec.name} asks for {resources.cpu:g} CPU cores; {capabilities.where} has "
            f"{capabilities.cores}, so it gets them all"
        )
    if resources.memory is not None and capabilities.memory_limit_missing:
        notes.append(
            f"{spec.name}: memory={resources.memory} MiB is not enforced here "
            f"({capabilities.memory_limit_missing})"
        )
    web = spec.web
    if web is not None and web.kind == "web_server" and capabilities.isolation_missing:
        notes.append(
            f"{spec.name}: replicas cannot get network namespaces here "
            f"({capabilities.isolation_missing}): it runs one replica at most, and port "
            f"{web.port} is the host's"
        )
    return resources, notes


def describe_gpus(gpus: Sequence[Gpu]) -> str:
    """`2 x H100 (0, 1), 1 x T4 (2)`; on a cluster `4 x H100 (2 on 10.0.0.2, 2 on 10.0.0.3)`;
    or `no GPU`."""
    by_type: dict[str, list[Gpu]] = {}
    for gpu in gpus:
        by_type.setdefault(gpu.type, []).append(gpu)
    return ", ".join(f"{len(of)} x {kind} ({_where(of)})" for kind, of in by_type.items()) or (
        "no GPU"
    )


def _where(gpus: list[Gpu]) -> str:
    if not any(gpu.node for gpu in gpus):
        return ", ".join(str(gpu.index) for gpu in gpus)
    per_node: dict[str, int] = {}
    for gpu in gpus:
        per_node[gpu.node] = per_node.get(gpu.node, 0) + 1
    return ", ".join(f"{count} on {node}" for node, count in per_node.items())
