"""The Ray backend on a real cluster of three nodes on this machine (tests/ray_cluster.py).

Replicas spread over nodes, GPUs counted per node and chosen by Ray, a node killed under load
(inputs retried per `retries`, then a clear error), scale to zero and back, functions with memory
snapshots starting fresh (no templates on Ray yet), and the errors of a server that cannot reach
a cluster.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ember.cli.loader import import_file
from ember.sdk.exceptions import ExecutionError, InvalidError
from tests.conftest import RunningServer, free_port, start_server, wait_until
from tests.integration.helpers import (
    app_info,
    ember_cli,
    load,
    replica_count,
    replica_pid,
    replicas_folder,
)
from tests.ray_cluster import RayCluster, RayNode, ray_installed

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not ray_installed(), reason="Ray is not installed (scripts/setup ray)"),
]


def serve_on(cluster: RayCluster, home: Path, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    running = start_server(home, cluster=cluster)
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    return running


@pytest.fixture
def ray_server(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningServer]:
    running = serve_on(ray_cluster, tmp_path / "home", monkeypatch)
    yield running
    assert not running.stop(), "replicas outlived the server"


@pytest.fixture
def own_cluster() -> Iterator[RayCluster]:
    """A cluster of its own (a test kills its nodes): a head and two workers."""
    cluster = RayCluster()
    try:
        cluster.add_node(num_cpus=2)
        cluster.add_node(num_cpus=2)
        cluster.add_node(num_cpus=2)
        yield cluster
    finally:
        assert not cluster.stop()


def per_node(cluster: RayCluster) -> dict[str, int]:
    return {node.ip: len(node.replica_pids()) for node in cluster.nodes}


def test_replicas_spread_over_the_nodes(ray_server: RunningServer, ray_cluster: RayCluster) -> None:
    cluster_app = load("cluster")
    cluster_app.app.deploy()
    wait_until(lambda: all(per_node(ray_cluster).values()), timeout=120)
    assert sorted(per_node(ray_cluster).values()) == [1, 1, 1]  # min_containers=3, spread
    assert cluster_app.spread.remote().startswith("r-")


def test_gpus_are_counted_per_node_and_chosen_by_ray(
    ray_server: RunningServer, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    gpu_app = load("cluster_gpus")
    gpu_app.app.deploy()
    assert gpu_app.two_gpus.remote() == "0,1"  # Ray's choice, in CUDA_VISIBLE_DEVICES
    # One replica per worker: each holds both of its node's GPUs.
    one_each = {"127.0.0.2": 0, "127.0.0.3": 1, "127.0.0.4": 1}
    wait_until(lambda: per_node(ray_cluster) == one_each, timeout=120)
    # A replica that crashes gives its GPUs back to Ray: its replacement gets them.
    crashed = ray_cluster.nodes[1].replica_pids()[0]
    os.kill(crashed, signal.SIGKILL)
    wait_until(lambda: crashed not in ray_cluster.replica_pids(), timeout=30)
    wait_until(
        lambda: (
            per_node(ray_cluster) == one_each
            and app_info("cluster-gpus").functions[0].replicas == {"ready": 2}
        ),
        timeout=120,
    )

    for gpu in ("A100", "H100:4"):  # no A100 at all; no node with four H100
        source = tmp_path / "wants.py"
        source.write_text(
            "import ember\napp = ember.App('wants')\n"
            f"@app.function(gpu={gpu!r})\ndef f():\n    return 1\n"
        )
        expected = r"the Ray cluster has 4 x H100 \(2 on 127\.0\.0\.3, 2 on 127\.0\.0\.4\)"
        with pytest.raises(InvalidError, match=expected):
            import_file(source).app.deploy()


def test_a_replica_ray_cannot_place_yet_waits_and_stops_cleanly(
    ray_server: RunningServer, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    source = tmp_path / "big.py"
    source.write_text(
        "import ember\napp = ember.App('big')\n"
        "@app.function(cpu=4, min_containers=3)\ndef f():\n    return 1\n"
    )
    big = import_file(source)
    big.app.deploy()
    # Two workers have four CPUs each; the head has two: Ray places two, the third waits.
    wait_until(
        lambda: per_node(ray_cluster) == {"127.0.0.2": 0, "127.0.0.3": 1, "127.0.0.4": 1},
        timeout=120,
    )
    wait_until(
        lambda: app_info("big").functions[0].replicas == {"ready": 2, "starting": 1}, timeout=60
    )
    assert big.f.remote() == 1
    stopped = ember_cli("app", "stop", "big", env=ray_server.env())
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not ray_cluster.replica_pids(), timeout=60)
    wait_until(lambda: not sum(app_info("big").functions[0].replicas.values()), timeout=60)


def test_a_node_killed_under_load_loses_no_input_beyond_its_retries(
    own_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = serve_on(own_cluster, tmp_path / "home", monkeypatch)
    try:
        cluster_app = load("cluster")
        cluster_app.app.deploy()
        # With retries: the inputs of the dead node run again elsewhere.
        results, on_dead = hold_and_kill(own_cluster, cluster_app.held, tmp_path / "a")
        assert results == [x * x for x in range(4)]
        assert on_dead  # the test did kill a node holding inputs
        log = running.log_path.read_text()
        assert "exited with code -1" in log  # the server saw its replicas go
        # Without retries: they fail, and say what happened.
        results, on_dead = hold_and_kill(own_cluster, cluster_app.held_once, tmp_path / "b")
        assert on_dead
        for x, result in enumerate(results):
            if x in on_dead:
                assert isinstance(result, ExecutionError), result
                assert "the replica running held_once" in str(result)
                assert "lost" in str(result) or "did not answer" in str(result)
            else:
                assert result == x * x
        assert len(own_cluster.live_nodes()) == 1  # only the head is left
    finally:
        assert not running.stop()


def hold_and_kill(cluster: RayCluster, function: Any, folder: Path) -> tuple[list[Any], set[int]]:
    """Four inputs held on their replicas; a worker node holding some is killed; the rest let
    go. Returns the results (exceptions as values) and the inputs that were on the dead node."""
    replicas_folder(folder)
    release = folder.parent / f"{folder.name}-release"
    results: list[Any] = []
    mapping = threading.Thread(
        target=lambda: results.extend(
            function.map(
                range(4),
                kwargs={"folder": str(folder), "release": str(release)},
                return_exceptions=True,
            )
        )
    )
    mapping.start()
    wait_until(lambda: len(list(folder.iterdir())) == 4, timeout=120)
    taken = {path.name: int(path.read_text()) for path in folder.iterdir()}
    victim = _worker_holding(cluster, taken)
    dead_pids = set(victim.replica_pids())
    on_dead = {x for replica, x in taken.items() if replica_pid(replica) in dead_pids}
    cluster.kill_node(victim)
    release.touch()
    mapping.join(timeout=120)
    assert not mapping.is_alive()
    return results, on_dead


def _worker_holding(cluster: RayCluster, taken: dict[str, int]) -> RayNode:
    pids = {replica_pid(replica) for replica in taken}
    for node in cluster.nodes[1:]:
        if node.process.poll() is None and pids & set(node.replica_pids()):
            return node
    raise AssertionError("no worker node holds an input")


def test_scale_to_zero_and_back(ray_server: RunningServer, ray_cluster: RayCluster) -> None:
    cluster_app = load("cluster")
    with cluster_app.app.run():
        first = cluster_app.idle.remote()
        name = cluster_app.app.deployed_name
        wait_until(lambda: replica_count(name, "idle") == 0, timeout=60)
        wait_until(lambda: not _runs(ray_cluster, first), timeout=30)  # gone from its node
        second = cluster_app.idle.remote()
        assert second != first  # a new replica, on whichever node Ray chose


def _runs(cluster: RayCluster, replica: str) -> bool:
    try:
        return replica_pid(replica) in cluster.replica_pids()
    except AssertionError:  # no process of that replica
        return False


def test_memory_snapshot_functions_start_fresh_and_the_server_says_why(
    ray_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBER_TEST_MARKS", str(tmp_path / "marks"))
    snapshots = load("snapshots")
    snapshots.app.deploy()
    value, replica = snapshots.Forked().lookup.remote(3)
    assert value == 9  # its snap hook ran in the replica itself: there is no template
    forked = next(f for f in app_info("snapshots").functions if f.name == "Forked")
    assert forked.snapshot is None and forked.cold_start is not None
    assert forked.cold_start.tier == "fresh"
    marks = (tmp_path / "marks").read_text().split()
    assert marks == ["snap", replica, "enter", replica]
    said = " ".join(ray_server.log_path.read_text().split())
    assert "forked replicas not on the Ray backend yet" in said


def test_volumes_need_a_shared_filesystem_on_a_cluster(
    ray_cluster: RayCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = start_server(tmp_path / "home", cluster=ray_cluster, shared_volumes=False)
    for key, value in running.env().items():
        monkeypatch.setenv(key, value)
    try:
        with pytest.raises(InvalidError, match="start the server with --volumes-path"):
            load("volumes").app.deploy()
    finally:
        assert not running.stop()


def test_no_cluster_at_the_address_is_a_clear_error_at_start(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    said = failed_start(tmp_path, "--ray-address", address)
    assert f"no Ray cluster at {address}: Connection refused" in said
    assert "ray start --head" in said


def test_ray_not_installed_is_a_clear_error_at_start(tmp_path: Path) -> None:
    # A `ray` package that cannot be imported stands in for a machine without Ray.
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    pythonpath = f"{shadow.parent}:{Path(__file__).resolve().parents[2]}"
    assert "pip install 'ember[ray]'" in failed_start(tmp_path, PYTHONPATH=pythonpath)


def failed_start(tmp_path: Path, *args: str, **env: str) -> str:
    """What `ember server --backend ray ARGS` says as it exits with 1, as one line (however the
    terminal wrapped it)."""
    home = {"EMBER_HOME": str(tmp_path / "home")}
    port = str(free_port())
    result = ember_cli("server", "--port", port, "--backend", "ray", *args, env=home | env)
    assert result.returncode == 1
    return " ".join(result.stderr.split())
