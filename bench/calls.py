"""Benchmark the call path on this machine: warm `.remote()` latency, `.map` throughput, and the
cold start of a CPU function with no snapshot (call to result with zero replicas).

    .venv/bin/python bench/calls.py [--runs 5] [--calls 2000] [--map-inputs 10000]

Starts its own `ember server` in a temporary EMBER_HOME; prints medians over the runs as a
markdown table (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import time

from common import deployed, percentile, print_runs


def one_run(echo, cold, app_name: str, calls: int, map_inputs: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from tests.integration.helpers import replica_count

    for i in range(50):  # warm up: replica started, connections open
        echo.remote(i)
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        echo.remote(i)
        latencies.append(time.perf_counter() - start)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--map-inputs", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="Print each run's row as JSON.")
    args = parser.parse_args()

    with deployed("bench_app.py") as (_, module):
        runs = [
            one_run(module.echo, module.cold, "bench-calls", args.calls, args.map_inputs)
            for _ in range(args.runs)
        ]

    goals = {"p50_ms": "≤ 3 ms", "p99_ms": "", "map_per_s": "≥ 2,000/s", "cold_s": ""}
    print_runs(runs, args.json,
               f"{args.calls} warm calls, .map over {args.map_inputs}", goals)  # fmt: skip


if __name__ == "__main__":
    main()
