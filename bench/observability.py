"""What metrics, metering and budgets cost: the added work itself, in-process, and end to end
with them on and off side by side.

    .venv/bin/python bench/observability.py [--runs 5] [--calls 200000]
    .venv/bin/python bench/observability.py --end-to-end [--runs 7] [--only NAME]...

In-process: the recording a `.remote()` does (admission's budget check, the request tally, the
queue wait, the slot time for the meter) and the one a gateway request does, per call, in
microseconds.

End to end: `bench/calls.py` (warm `.remote()`), `bench/calls_cpu.py` (CPU per `.remote()` by
process) and `bench/gateway.py --no-sandbox` (the gateway's added latency, its upstream reached
directly with no pasta between, and the server's CPU per request) against a server with
metering and against one without (EMBER_BENCH_NO_METERING=1), each round both sides in random
order, so that a shared machine's noise falls on both; prints each figure's median on both
sides and the ratio on / off. `--only` picks scripts by name (SCRIPTS), among them `sandboxed`:
`bench/gateway.py` with its upstream behind pasta, as users' `web_server` replicas run.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from common import machine, print_runs, print_side_by_side
from versus import HERE, run_once

from ember import wire
from ember.resources import Resources
from ember.server.budgets import Budgets
from ember.server.deployments import Deployments
from ember.server.logs import LogSink
from ember.server.metering.meter import Meter
from ember.server.metering.prices import PriceTable
from ember.server.metrics import ServerMetrics
from ember.server.pools import PoolKey, PoolRegistry
from ember.server.replica_metrics import ReplicaMetrics
from ember.server.replicas.state import Lifecycle, ReplicaState
from ember.server.store.sql import SqlStore


def setup(folder: Path):  # type: ignore[no-untyped-def]
    store = SqlStore(f"sqlite:///{folder / 'ember.db'}")
    lifecycle = Lifecycle()
    pools = PoolRegistry(on_wait=lambda: None, clock=lifecycle.clock)
    spec = wire.FunctionSpec(name="echo")
    request = wire.DeployRequest(app_name="bench", declared_name="bench", module="m",
                                 functions=[spec])  # fmt: skip
    deployments = Deployments(store, folder / "apps", pools, lambda *a: None,
                              lambda s: (Resources(), []))  # fmt: skip
    deployments.deploy(request)
    pool = pools.get_or_create(PoolKey("bench", 1, "echo", ""), spec, request, None, Resources())
    meter = Meter(store, PriceTable(), {}, pools.resources_of, lifecycle.clock)
    lifecycle.subscribe(meter.on_replica_event)
    budgets = Budgets(store, meter, pools, LogSink(store))
    metrics = ServerMetrics(pools, deployments, meter, ReplicaMetrics(pools, None), budgets.all)  # type: ignore[arg-type]
    replica = lifecycle.create("r-1", pool.key)
    pool.replicas[replica.id] = replica
    lifecycle.move(replica, ReplicaState.STARTING)
    lifecycle.move(replica, ReplicaState.READY)
    return pool, replica, metrics, budgets


def per_call_us(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        pool, replica, metrics, budgets = setup(Path(folder))
        start = time.perf_counter()
        for _ in range(calls):  # what api/calls.py, admission and dispatch.py add to .remote()
            with metrics.timed("bench", "echo", "call"):
                budgets.admit(pool)
                waiting = time.perf_counter()
                held = time.perf_counter()
                metrics.waited(pool, held - waiting)
                metrics.slot_held(replica, 1, time.perf_counter() - held)
        remote = (time.perf_counter() - start) / calls * 1e6
        start = time.perf_counter()
        for _ in range(calls):  # what gateway/app.py adds to a web request
            started = time.perf_counter()
            budgets.admit(pool)
            waiting = time.perf_counter()
            held = time.perf_counter()
            metrics.waited(pool, held - waiting)
            metrics.slot_held(replica, 1, time.perf_counter() - held)
            metrics.request("bench", "echo", "web", 200, started)
        web = (time.perf_counter() - start) / calls * 1e6
    return {"remote_added_us": remote, "web_added_us": web}


SCRIPTS = {
    "calls": ["calls.py"],
    "calls_cpu": ["calls_cpu.py"],
    "gateway": ["gateway.py", "--no-sandbox"],
    "sandboxed": ["gateway.py"],  # through pasta, as users' web_server replicas run: --only
}
DEFAULT = ["calls", "calls_cpu", "gateway"]


def end_to_end(runs: int, names: list[str]) -> None:
    """Each script named `runs` times with metering off and on, alternating; medians side by
    side."""
    scripts = {name: SCRIPTS[name] for name in names}
    rows: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(runs):
        sides = [("off", ["--no-metering"]), ("on", [])]
        for side, extra in random.sample(sides, 2):  # no side always follows the other
            row: dict[str, float] = {}
            for name, (script, *args) in scripts.items():
                measured = run_once(HERE, script, [*args, *extra])
                row |= {f"{name}_{key}": value for key, value in measured.items()}
            rows[side].append(row)
    print(machine())
    print(f"{runs} alternating runs each of {', '.join(' '.join(s) for s in scripts.values())}")
    print_side_by_side(("metering off", "on"), (rows["off"], rows["on"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--json", action="store_true", help="Print each run's row as JSON.")
    parser.add_argument(
        "--end-to-end", action="store_true", help="calls.py and gateway.py, metering off vs on"
    )
    parser.add_argument(
        "--only", choices=sorted(SCRIPTS), action="append", help="with --end-to-end: this one"
    )
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args.runs, args.only or DEFAULT)
        return
    runs = [per_call_us(args.calls) for _ in range(args.runs)]
    print_runs(runs, args.json, f"{args.calls} recorded calls and web requests")


if __name__ == "__main__":
    main()
