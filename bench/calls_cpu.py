"""Where a warm `.remote()` spends CPU: the server's, the replica's and the caller's CPU time per
call, read from /proc around a run of calls (wall time per call beside them).

    .venv/bin/python bench/calls_cpu.py [--runs 3] [--calls 5000]
    .venv/bin/python bench/versus.py BASE calls_cpu.py --runs 3    # side by side with BASE

CPU time, unlike latency, hardly moves when other work shares the machine, so this tells which
process a regression lives in even on a busy host.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import add_server_options, deployed, print_runs, server_options


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replicas_of(server_pid: int) -> list[int]:
    """The server's replica processes (its descendants running ember.runtime.replica). Its own
    walk, not ember.process.process_tree: bench/versus.py runs this against older commits."""
    found, stack = [], [server_pid]
    while stack:
        pid = stack.pop()
        for task in Path(f"/proc/{pid}/task").iterdir():
            stack += [int(child) for child in (task / "children").read_text().split()]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if pid != server_pid and b"ember.runtime.replica" in command:
            found.append(pid)
    return found


def one_run(echo, server_pid: int, calls: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    for i in range(300):  # warm up: replica started, connections open
        echo.remote(i)
    replicas = replicas_of(server_pid)
    server0, caller0 = cpu_seconds(server_pid), time.process_time()
    replica0 = sum(cpu_seconds(pid) for pid in replicas)
    start = time.perf_counter()
    for i in range(calls):
        echo.remote(i)
    wall = time.perf_counter() - start
    per_call = 1e3 / calls  # seconds in total -> ms per call
    return {
        "wall_ms": wall * per_call,
        "server_cpu_ms": (cpu_seconds(server_pid) - server0) * per_call,
        "replica_cpu_ms": (sum(cpu_seconds(pid) for pid in replicas) - replica0) * per_call,
        "caller_cpu_ms": (time.process_time() - caller0) * per_call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--json", action="store_true", help="one JSON line (bench/versus.py)")
    add_server_options(parser)
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        with deployed("bench_app.py", **server_options(args)) as (server, module):
            runs.append(one_run(module.echo, server.process.pid, args.calls))
    print_runs(runs, args.json, f"{args.calls} warm .remote() calls, CPU per call by process")


if __name__ == "__main__":
    main()
