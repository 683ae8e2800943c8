"""Benchmark the call path on this machine: warm `.remote()` latency, `.map` throughput, and the
cold start of a CPU function with no snapshot (call to result with zero replicas).

    .venv/bin/python bench/calls.py [--runs 5] [--calls 2000] [--map-inputs 10000] [--no-sandbox]
        [--no-metering]
    .venv/bin/python bench/calls.py --backend ray [--runs 5]

Starts its own `ember server` in a temporary EMBER_HOME; prints medians over the runs as a
markdown table (paste into BENCHMARKS.md). With `--backend ray` each run measures, one after
the other, the local backend, the Ray backend (a cluster of a head and one worker node on this
machine, tests/ray_cluster.py, whose worker runs the replicas) and Ray's own round trips on that
cluster (a task, and a method of an actor on the worker, with `ray.get`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from common import add_server_options, deployed, percentile, print_runs, server_options


def one_run(echo, cold, app_name: str, calls: int, map_inputs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from tests.integration.helpers import replica_count

    for i in range(50):  # warm up: replica started, connections open
        echo.remote(i)
    latencies = timed(lambda i: echo.remote(i), calls)
    start = time.perf_counter()
    total = sum(echo.map(range(map_inputs)))
    map_seconds = time.perf_counter() - start
    assert total == sum(range(map_inputs))

    deadline = time.monotonic() + 60
    while replica_count(app_name, "cold") and time.monotonic() < deadline:
        time.sleep(0.05)
    start = time.perf_counter()
    cold.remote(1)
    cold_start = time.perf_counter() - start
    return {
        "p50_ms": percentile(latencies, 0.5) * 1e3,
        "p99_ms": percentile(latencies, 0.99) * 1e3,
        "map_per_s": map_inputs / map_seconds,
        "cold_s": cold_start,
    }


def timed(call: Callable[[int], Any], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - start)
    return latencies


def ray_round_trips(address: str, worker_ip: str, calls: int, map_inputs: int) -> dict[str, float]:
    """Ray's own: a task's and an actor method's `ray.get` round trip, and tasks/s in a batch."""
    import ray

    ray.init(address=address, logging_level="error")
    try:
        task = ray.remote(num_cpus=0.125)(lambda x: x)
        on_worker = {f"node:{worker_ip}": 0.01}  # the actor where Ember's replicas run

        class Echo:
            def echo(self, x: int) -> int:
                return x

        actor = ray.remote(Echo).options(num_cpus=0.125, resources=on_worker).remote()
        for i in range(50):
            ray.get([task.remote(i), actor.echo.remote(i)])
        task_latencies = timed(lambda i: ray.get(task.remote(i)), calls)
        actor_latencies = timed(lambda i: ray.get(actor.echo.remote(i)), calls)
        start = time.perf_counter()
        assert sum(ray.get([task.remote(i) for i in range(map_inputs)])) == sum(range(map_inputs))
        batch_seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    return {
        "ray_task_p50_ms": percentile(task_latencies, 0.5) * 1e3,
        "ray_actor_p50_ms": percentile(actor_latencies, 0.5) * 1e3,
        "ray_tasks_per_s": map_inputs / batch_seconds,
    }


def measure(args: argparse.Namespace, cluster: Any = None) -> dict[str, float]:
    with deployed("bench_app.py", cluster, **server_options(args)) as (_, module):
        return one_run(module.echo, module.cold, "bench-calls", args.calls, args.map_inputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--map-inputs", type=int, default=10_000)
    parser.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="ray: the local backend, the Ray backend and Ray itself, side by side",
    )
    parser.add_argument("--json", action="store_true", help="Print each run's row as JSON.")
    add_server_options(parser)
    args = parser.parse_args()

    goals = {"p50_ms": "≤ 3 ms", "p99_ms": "", "map_per_s": "≥ 2,000/s", "cold_s": ""}
    per_run = f"{args.calls} warm calls, .map over {args.map_inputs}"
    if args.backend == "local":
        print_runs([measure(args) for _ in range(args.runs)], args.json, per_run, goals)
        return
    from tests.ray_cluster import RayCluster

    cluster = RayCluster()
    try:
        cluster.add_node(num_cpus=1)  # the head: the server's driver connects here
        worker = cluster.add_node(num_cpus=2)
        runs = []
        for _ in range(args.runs):
            row = {f"local_{k}": v for k, v in measure(args).items()}
            row |= {f"ray_backend_{k}": v for k, v in measure(args, cluster).items()}
            row |= ray_round_trips(cluster.address, worker.ip, args.calls, args.map_inputs)
            runs.append(row)
    finally:
        cluster.stop()
    print_runs(runs, args.json, per_run + "; Ember on both backends, then Ray's own")


if __name__ == "__main__":
    main()
