"""Run one benchmark on this checkout and on another commit, side by side, alternating runs.

    .venv/bin/python bench/versus.py BASE calls.py [--runs 5] [--this-only ARG] [-- extra args]

BASE (a commit, tag or branch) is checked out in a temporary git worktree; this checkout's
`bench/` and the test suite's server starter (`tests/*.py`, which `bench/common.py` imports) are
copied into it, so both sides run the same script against their own `ember`. Runs
alternate (base, this, base, this, ...) so that noise on a shared machine falls on both. Prints
each metric's median on both sides and the ratio this / base.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine, print_side_by_side

HERE = Path(__file__).resolve().parent.parent


def run_once(tree: Path, script: str, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(tree / "bench" / script), "--runs", "1", "--json", *extra]
    out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{script} failed in {tree}:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("script", help="a script of bench/ that takes --runs 1 --json")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--this-only",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for this side's script only (e.g. --no-sandbox)",
    )
    parser.add_argument("extra", nargs="*", help="after --: arguments for the script")
    args = parser.parse_args()
    sha = subprocess.run(["git", "rev-parse", "--short", args.base], cwd=HERE, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ember-base-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), sha], cwd=HERE,
                       check=True, capture_output=True)  # fmt: skip
        try:
            shutil.copytree(HERE / "bench", base / "bench", dirs_exist_ok=True)
            for starter in (HERE / "tests").glob("*.py"):  # bench/common.py's start_server
                shutil.copy(starter, base / "tests" / starter.name)
            rows: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
            for _ in range(args.runs):
                rows["base"].append(run_once(base, args.script, args.extra))
                rows["this"].append(run_once(HERE, args.script, args.extra + args.this_only))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=HERE,
                           check=False, capture_output=True)  # fmt: skip
    print(machine())
    this = " ".join(["working tree", *args.this_only])
    print(f"{args.script}: {args.runs} alternating runs each; base = {sha}, this = {this}")
    print_side_by_side((f"base {sha}", "this"), (rows["base"], rows["this"]))


if __name__ == "__main__":
    main()
