"""Placement as a pure function, and what a deploy is told about the host."""

from __future__ import annotations

import pytest

from ember import wire
from ember.backends.base import Capabilities, Gpu
from ember.backends.gpus import GpuFlagError, declared, host_gpus
from ember.resources import parse_gpu
from ember.server.replicas.placement import (
    Claim,
    Inventory,
    Placement,
    Unplaceable,
    place,
    resolve_resources,
)

H100S = [Gpu(i, "H100", "h") for i in range(2)]


def claim(
    name: str,
    gpu: str | list[str] | None,
    urgent: bool = False,
    since: float = 0.0,
    cpu: float | None = None,
) -> Claim:
    return Claim(name, parse_gpu(gpu), cpu, urgent, since)


def test_urgent_claims_first_then_the_oldest() -> None:
    claims = [
        claim("old", "H100", since=1),
        claim("urgent", "H100", urgent=True, since=3),
        claim("new", "H100", since=2),
    ]
    assert sorted(place(claims, H100S, {})) == ["old", "urgent"]


def test_a_big_claim_that_does_not_fit_does_not_block_small_ones() -> None:
    claims = [claim("big", "H100:4", since=1), claim("small", "H100", since=2)]
    assert place(claims, H100S, {}) == {"small": Placement((0,))}


def test_counts_take_gpus_of_one_type() -> None:
    gpus = [Gpu(0, "T4", "t"), Gpu(1, "H100", "h"), Gpu(2, "H100", "h")]
    assert place([claim("two", "H100:2")], gpus, {}) == {"two": Placement((1, 2))}
    assert place([claim("two", "any:2")], gpus, {}) == {"two": Placement((1, 2))}


def test_h100_may_run_on_an_h200_but_not_with_a_bang() -> None:
    h200 = [Gpu(0, "H200", "h")]
    assert place([claim("a", "H100")], h200, {}) == {"a": Placement((0,))}
    assert place([claim("a", "H100!")], h200, {}) == {}


def test_cpu_claims_are_pinned_to_the_least_loaded_cores() -> None:
    claims = [claim("a", None, cpu=2), claim("b", None, cpu=1, since=1)]
    placed = place(claims, [], {0: 1, 1: 0, 2: 0})
    assert placed == {"a": Placement((), (1, 2)), "b": Placement((), (0,))}


def test_the_inventory_frees_what_a_replica_held() -> None:
    inventory = Inventory(tuple(H100S), (0, 1))
    inventory.lease("r1", Placement((1,), (0,)))
    assert [g.index for g in inventory.free_gpus()] == [0]
    assert inventory.core_load() == {0: 1, 1: 0}
    inventory.release("r1")
    assert len(inventory.free_gpus()) == 2 and inventory.core_load() == {0: 0, 1: 0}


def caps(gpus: list[Gpu], isolation: str | None = None) -> Capabilities:
    return Capabilities(tuple(gpus), 2, isolation, "no cgroups here", None)


def test_a_gpu_the_host_lacks_fails_the_deploy_naming_what_it_has() -> None:
    spec = wire.FunctionSpec(name="f", gpu="A100-80GB:2")
    with pytest.raises(Unplaceable, match=r"this host has 2 x H100 \(0, 1\).*--gpu-fallback cpu"):
        resolve_resources(spec, caps(H100S), gpu_fallback=False)
    resources, notes = resolve_resources(spec, caps(H100S), gpu_fallback=True)
    assert resources.gpu is None and "runs on the CPU" in notes[0]


def test_the_deploy_says_what_the_host_cannot_honour() -> None:
    web = wire.WebEndpointSpec(kind="web_server", port=8000)
    spec = wire.FunctionSpec(name="f", gpu="H100", cpu=8, memory=1024, web=web)
    resources, notes = resolve_resources(spec, caps(H100S, isolation="no bwrap"), False)
    assert resources.gpu is not None
    text = " | ".join(notes)
    assert "8 CPU cores; this host has 2" in text
    assert "memory=1024 MiB is not enforced" in text
    assert "no bwrap" in text and "port 8000 is the host's" in text


def test_declared_gpus() -> None:
    assert [(g.index, g.type) for g in declared("H100:2,T4:1")] == [
        (0, "H100"),
        (1, "H100"),
        (2, "T4"),
    ]
    assert host_gpus("none") == []
    with pytest.raises(GpuFlagError, match="not a GPU type"):
        declared("H100:2,bogus")
    with pytest.raises(GpuFlagError, match="no GPU with index 3"):
        host_gpus("3")
