"""The Ray backend's pure parts: the cluster's GPUs as Ember counts them, an actor's resources,
the node-side log buffer. No Ray needed (tests/integration/test_ray.py runs a real cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from ember import wire
from ember.backends.base import Capabilities
from ember.backends.ray import DEFAULT_CPU, RayReplica, actor_options, cluster_gpus
from ember.backends.ray_node import MAX_KEPT_LINES, _Log
from ember.resources import parse_gpu
from ember.server.replicas.placement import Unplaceable, place, resolve_resources
from tests.unit.test_placement import claim


def node(address: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"NodeManagerAddress": address, "Alive": alive, "Resources": resources}


# Ray names a node's GPU type `accelerator_type:<name>`: itself for real GPUs (value 1), or
# as an operator declares it with `ray start --resources` (any value).
NODES = [
    node("10.0.0.3", CPU=32, GPU=2, **{"accelerator_type:H100": 1}),
    node("10.0.0.2", CPU=8),  # the head, no GPU
    node(
        "10.0.0.4", CPU=64, GPU=4, **{"accelerator_type:A100": 1, "accelerator_type:A100-80GB": 4}
    ),
    node("10.0.0.5", CPU=16, GPU=1),  # a GPU Ray could not name
    node("10.0.0.6", alive=False, CPU=128, GPU=8, **{"accelerator_type:H100": 1}),
]


def test_the_cluster_gpus_by_node_and_type() -> None:
    cluster = cluster_gpus(NODES)
    assert [(g.index, g.type, g.node) for g in cluster.gpus] == [
        (0, "H100", "10.0.0.3"), (1, "H100", "10.0.0.3"),
        (2, "A100-80GB", "10.0.0.4"), (3, "A100-80GB", "10.0.0.4"),
        (4, "A100-80GB", "10.0.0.4"), (5, "A100-80GB", "10.0.0.4"),
        (6, "unknown", "10.0.0.5"),
    ]  # fmt: skip
    assert cluster.resource_of == {
        "H100": "accelerator_type:H100",
        "A100-80GB": "accelerator_type:A100-80GB",
    }
    assert cluster.cores == 64  # the most one replica can get: the largest live node's


def test_ray_names_an_a100_of_either_size_a100() -> None:
    cluster = cluster_gpus([node("n", CPU=8, GPU=1, **{"accelerator_type:A100": 1})])
    assert [g.type for g in cluster.gpus] == ["A100-40GB"]  # the smaller, unless declared
    assert cluster.resource_of == {"A100-40GB": "accelerator_type:A100"}


def test_an_actor_asks_for_the_type_and_count_the_server_placed() -> None:
    cluster = cluster_gpus(NODES)
    spec = wire.FunctionSpec(name="f", gpu=["A100-80GB:2", "H100"], cpu=4, memory=2048)
    placed = place([claim("r", spec.gpu)], cluster.gpus, {})["r"]
    gpus = [cluster.gpus[i] for i in placed.gpus]
    options = actor_options(spec, gpus, cluster.resource_of, cluster.cores)
    assert options["num_gpus"] == 2
    assert options["resources"] == {"accelerator_type:A100-80GB": 0.001}
    assert options["num_cpus"] == 4 and options["memory"] == 2048 * 2**20
    assert options["scheduling_strategy"] == "SPREAD"


def test_an_actor_without_gpus_or_cpu_asks_for_a_little_cpu() -> None:
    options = actor_options(wire.FunctionSpec(name="f", cpu=None), [], {}, 8)
    assert options["num_cpus"] == DEFAULT_CPU and options["num_gpus"] == 0
    assert "resources" not in options and "memory" not in options
    assert actor_options(wire.FunctionSpec(name="f", cpu=100), [], {}, 8)["num_cpus"] == 8


def test_gpus_of_one_replica_come_from_one_node() -> None:
    cluster = cluster_gpus([
        node("a", CPU=8, GPU=2, **{"accelerator_type:H100": 1}),
        node("b", CPU=8, GPU=2, **{"accelerator_type:H100": 1}),
    ])  # fmt: skip
    placed = place([claim("x", "H100:2"), claim("y", "H100:2")], cluster.gpus, {})
    assert [{cluster.gpus[i].node for i in p.gpus} for p in placed.values()] == [{"a"}, {"b"}]
    assert place([claim("z", "H100:3")], cluster.gpus, {}) == {}  # four in all, two per node


def test_a_gpu_no_node_has_fails_the_deploy_naming_what_the_cluster_has() -> None:
    cluster = cluster_gpus(NODES)
    capabilities = Capabilities(cluster.gpus, cluster.cores, None, None, None, "the Ray cluster")
    spec = wire.FunctionSpec(name="f", gpu="H100:4")
    with pytest.raises(Unplaceable) as info:
        resolve_resources(spec, capabilities, gpu_fallback=False)
    assert (
        "f asks for gpu H100/H200:4, and the Ray cluster has 2 x H100 (2 on 10.0.0.3), "
        "4 x A100-80GB (4 on 10.0.0.4), 1 x unknown (1 on 10.0.0.5)"
    ) in str(info.value)
    assert parse_gpu("any")  # the unknown GPU is still usable by gpu="any"
    resolve_resources(wire.FunctionSpec(name="g", gpu="any"), capabilities, gpu_fallback=False)


def test_the_node_keeps_log_lines_in_order_and_says_what_it_dropped() -> None:
    log = _Log()
    for i in range(MAX_KEPT_LINES + 5):
        log.write(f"line {i}")
    last = MAX_KEPT_LINES + 3
    assert log.since(last) == [f"line {last}", f"line {last + 1}"]
    caught_up = log.since(0)
    assert caught_up[0] == "[ember] 5 log line(s) were dropped on the node"
    assert caught_up[1] == "line 5" and len(caught_up) == MAX_KEPT_LINES + 1


def test_lines_fetched_twice_reach_the_log_once() -> None:
    """A read of the logs fetches the latest lines while the long poll is out; when the poll
    answers from its older cursor, only what is new is delivered."""
    seen: list[str] = []
    replica = RayReplica("r-1", actor=None, starting=None, on_log=seen.append)
    replica._deliver(0, 2, ["a", "b"])  # the logs read: lines 0-1
    replica._deliver(0, 3, ["a", "b", "c"])  # the long poll, sent at cursor 0: lines 0-2
    replica._deliver(3, 3, [])
    assert seen == ["a", "b", "c"] and replica.log_cursor == 3
