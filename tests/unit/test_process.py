"""A replica and what it started as one unit: the process tree of a subreaper, the processes
that carry a replica's id, killing them all (real processes, no sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ember import wire
from ember.process import carrying, kill_tree, process_tree
from tests.conftest import alive, wait_until

# A replica-like process: a subreaper with a child in a session of its own, and a `sleep` that
# a shell left behind (an orphan, reparented to the subreaper). It prints its line when both run.
SUBREAPER = """
import subprocess, time
from ember.process import become_subreaper
become_subreaper()
subprocess.Popen(["sleep", "60"], start_new_session=True)
subprocess.run(["sh", "-c", "sleep 60 &"], check=True)
print("running", flush=True)
time.sleep(60)
"""

# The same, then the runtime's last act; the line says it is done, and it waits to be killed.
ENDS = """
import os, subprocess, sys, time
from ember.process import become_subreaper, end_replica
become_subreaper()
subprocess.Popen(["sleep", "60"], start_new_session=True)
subprocess.run(["sh", "-c", "sleep 60 &"], check=True, env={})  # no replica id: only the tree
end_replica(os.environ["EMBER_REPLICA_ID"])
print("ended", flush=True)
time.sleep(60)
"""


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; each is killed with its tree at the end, whatever happened."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        kill_tree(process.pid)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _start(
    started: list[subprocess.Popen[str]], argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), **(env or {})}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    started.append(process)
    return process


def _command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_the_tree_of_a_subreaper_holds_what_left_its_session_and_its_orphans(
    started: list[subprocess.Popen[str]],
) -> None:
    process = _start(started, [sys.executable, "-c", SUBREAPER])
    assert process.stdout is not None and process.stdout.readline() == "running\n"

    def tree_of_sleeps() -> list[int] | None:  # the shell's child may not have exec'd yet
        tree = process_tree(process.pid)
        return tree if sorted(_command(pid) for pid in tree[1:]) == ["sleep 60"] * 2 else None

    tree = wait_until(tree_of_sleeps)
    assert tree[0] == process.pid

    kill_tree(process.pid)
    wait_until(lambda: not any(alive(pid) for pid in tree))
    assert process_tree(process.pid) == []  # a zombie until reaped: not a live process


def test_processes_are_found_by_the_replica_id_they_carry(
    started: list[subprocess.Popen[str]],
) -> None:
    replica_id = f"r-{uuid.uuid4().hex[:12]}"
    env = {wire.REPLICA_ID_ENV: replica_id}
    # Detached from us: its own session, and `sh` exits, so no tree of ours holds the sleep.
    _start(started, ["setsid", "sh", "-c", "sleep 60 & echo $!"], env).wait()
    other = _start(started, ["sleep", "60"], {wire.REPLICA_ID_ENV: replica_id + "x"})
    (found,) = wait_until(lambda: carrying([replica_id]))
    assert _command(found) == "sleep 60" and found != other.pid
    kill_tree(found)
    wait_until(lambda: not carrying([replica_id]))
    assert alive(other.pid)  # another replica's: left alone


def test_a_replica_ends_its_tree_and_what_carries_its_id_but_not_its_parent(
    started: list[subprocess.Popen[str]],
) -> None:
    replica_id = f"r-{uuid.uuid4().hex[:12]}"
    env = {wire.REPLICA_ID_ENV: replica_id}
    elsewhere = _start(started, ["setsid", "sleep", "60"], env)  # not below the replica
    # The replica's parent carries its id too, as bwrap's init does in a sandbox.
    parent = _start(started, ["sh", "-c", f"{sys.executable} -c '{ENDS}'; sleep 60"], env)
    assert parent.stdout is not None and parent.stdout.readline() == "ended\n"
    # Below the parent, only the replica is left: its tree is gone, the orphan included.
    _, replica = process_tree(parent.pid)
    assert _command(replica).startswith(f"{sys.executable} -c")
    wait_until(lambda: not alive(elsewhere.pid))
    assert alive(parent.pid)
