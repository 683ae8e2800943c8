"""What the benchmarks share: a private server with one app deployed, and percentiles."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import RunningServer, start_server  # the test suite's server starter

NO_METERING_ENV = "EMBER_BENCH_NO_METERING"  # ember/server/settings.py (not imported: versus.py
# runs these scripts against commits that predate it, which ignore it)


@contextlib.contextmanager
def deployed(
    app_file: str,
    cluster: Any = None,
    server_args: list[str] | None = None,
    server_env: dict[str, str] | None = None,
) -> Iterator[tuple[RunningServer, ModuleType]]:
    """A fresh `ember server` (given `server_args`, and `server_env` on top of this process's
    environment) in a temporary home with `bench/<app_file>` deployed; on the Ray backend if
    given a cluster (tests/ray_cluster.py: RayCluster)."""
    with tempfile.TemporaryDirectory() as home:
        server = start_server(
            Path(home), cluster=cluster, extra_args=server_args, extra_env=server_env
        )
        os.environ.update(server.env())
        from ember.cli.loader import import_file

        module = import_file(Path(__file__).parent / app_file)
        try:
            module.app.deploy()
            yield server, module
        finally:
            server.stop()


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The server options every end-to-end benchmark takes (see `server_options`)."""
    parser.add_argument("--no-sandbox", action="store_true", help="ember server --no-sandbox")
    parser.add_argument(
        "--no-metering",
        action="store_true",
        help=f"the server without metering and metrics ({NO_METERING_ENV}=1)",
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """`deployed`'s keyword arguments for the options `add_server_options` added."""
    return {
        "server_args": ["--no-sandbox"] if args.no_sandbox else [],
        "server_env": {NO_METERING_ENV: "1"} if args.no_metering else {},
    }


def descendants(pid: int) -> list[int]:
    """Every process started by `pid`, directly or not (from /proc: bench/versus.py runs these
    scripts against commits that predate ember.process)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread or process that just ended
                children = [int(child) for child in (task / "children").read_text().split()]
                found += children
                stack += children
    return found


def web_server_port(port: int, server_pid: int) -> int:
    """Where this host reaches a `web_server` declared on `port`: the port itself, or, when its
    replica is sandboxed, the loopback port that the server's pasta forwards to it (read off
    pasta's arguments; for benchmarks only: the server does not publish it). Only this server's
    pasta: another engineer's benchmark may be running beside this one."""
    for pid in descendants(server_pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and Path(args[0].decode()).name == "pasta":
            for arg in args:
                host, _, inside = arg.decode().rpartition(":")
                if inside == str(port) and host.startswith("127.0.0.1/"):
                    return int(host.split("/")[1])
    return port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    return f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"


def print_runs(
    runs: list[dict[str, float]], as_json: bool, per_run: str, goals: dict[str, str] | None = None
) -> None:
    """Each run's row as JSON lines, or the medians (with min and max) as a markdown table."""
    if as_json:
        for row in runs:
            print(json.dumps(row))
        return
    print(machine())
    print(f"runs: {len(runs)}; per run: {per_run}")
    print("| metric | median | min | max | goal |")
    print("|---|---|---|---|---|")
    for key in runs[0]:
        values = [r[key] for r in runs]
        goal = (goals or {}).get(key, "")
        print(
            f"| {key} | {statistics.median(values):.3f} | {min(values):.3f} | "
            f"{max(values):.3f} | {goal} |"
        )


def print_side_by_side(
    names: tuple[str, str], rows: tuple[list[dict[str, float]], list[dict[str, float]]]
) -> None:
    """Each metric's median over the runs of two sides, and the ratio second / first."""
    print(f"| metric | {names[0]} | {names[1]} | {names[1]} / {names[0]} |")
    print("|---|---|---|---|")
    for key in rows[1][0]:
        before = statistics.median(r[key] for r in rows[0])
        after = statistics.median(r[key] for r in rows[1])
        ratio = f"{after / before:.3f}" if before else "-"
        print(f"| {key} | {before:.3f} | {after:.3f} | {ratio} |")
