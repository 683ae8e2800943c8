"""What the data-directory view and the replica user add to a replica's start (run as root).

Per start, the server computes the replica's view (`Sandbox.view`: hands its source, image and
volumes to the `ember-replica` group, the first time for sources and images, every time for
volumes) and starts it through bwrap, as root with `setpriv` dropping to the user, where a
non-root server uses an unprivileged bwrap with a user namespace. Measured here on a made-up
data directory: an image of `--image-files` files (a venv with torch has about 20,000), a
source of 10 files, a volume of `--volume-files` files.

    .venv/bin/python bench/sandbox.py [--runs 5] [--image-files 20000] [--volume-files 500]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import machine
from ember import wire
from ember.backends.base import ReplicaLaunch
from ember.backends.sandbox import Sandbox

STARTS = 20  # sandboxed `true` runs per mode and run


def fill(folder: Path, files: int, per_folder: int = 20) -> None:
    for i in range(files):
        path = folder / f"d{i // per_folder}" / f"f{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
        path.chmod(0o600)


def launch(home: Path) -> ReplicaLaunch:
    function = wire.FunctionSpec(name="f", volumes={"/data": "vol"})
    spec = wire.ReplicaSpec(
        app_name="a", version=1, declared_name="app", module="m",
        source_dir=str(home / "apps/a/v1"), function=function,
        server_url="http://127.0.0.1:1", volume_root=str(home / "volumes"),
    )  # fmt: skip
    return ReplicaLaunch(
        spec=spec,
        assignment=wire.ReplicaAssignment(replica_id="r-bench", token="t"),
        on_log=print,
        python=str(home / "images/h/venv/bin/python"),
    )


def views(sandbox: Sandbox, image_files: int, volume_files: int) -> dict[str, float]:
    """Milliseconds for the first view of a replica (grants everything) and a later one."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        fill(home / "images/h/venv", image_files)
        fill(home / "apps/a/v1", 10)
        fill(home / "volumes/vol/snapshots/s1", volume_files)
        home.chmod(0o700)
        scratch = home / "volumes/.replicas/r-bench"
        started = time.perf_counter()
        sandbox.view(launch(home), home, scratch)
        first = time.perf_counter() - started
        started = time.perf_counter()
        sandbox.view(launch(home), home, scratch)
        later = time.perf_counter() - started
    return {"first view (ms)": first * 1000, "later view (ms)": later * 1000}


def start_ms(sandbox: Sandbox) -> float:
    """Median milliseconds to run `true` in the sandbox (bwrap's setup, the user switch)."""
    times = []
    for _ in range(STARTS):
        read, write = os.pipe()
        started = time.perf_counter()
        subprocess.run(sandbox.wrap(["true"], write), pass_fds=(write,), check=True)
        times.append(time.perf_counter() - started)
        os.close(read)
        os.close(write)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--image-files", type=int, default=20_000)
    parser.add_argument("--volume-files", type=int, default=500)
    args = parser.parse_args()
    sandbox, why_not = Sandbox.detect()
    if sandbox is None or sandbox.user is None:
        sys.exit(f"needs a server that isolates apps (root, bubblewrap, passt): {why_not}")
    plain = Sandbox(sandbox.bwrap, sandbox.pasta)  # what a non-root server runs
    rows: dict[str, list[float]] = {}
    for _ in range(args.runs):
        sandbox.granted.clear()
        row = views(sandbox, args.image_files, args.volume_files)
        row["start as ember-replica (ms)"] = start_ms(sandbox)
        row["start as the server's user (ms)"] = start_ms(plain)
        for name, value in row.items():
            rows.setdefault(name, []).append(value)
    print(machine())
    print(f"image {args.image_files} files, volume {args.volume_files} files, {args.runs} runs")
    print("| metric | median | min | max |\n|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | "
              f"{max(values):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
