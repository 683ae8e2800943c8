"""Process plumbing shared by the server, replicas and engines: dying with the parent, and a
replica with everything it started as one unit that is killed together.

Without a sandbox a replica's processes are found two ways, as `ps` cannot group them:
- below it in the process tree: the replica runtime is a subreaper, so what its children leave
  (a double-forked daemon, say) is reparented to it, not to init, while it runs;
- by the EMBER_REPLICA_ID in their environment, which every child inherits: this finds them
  after the runtime itself is gone (a crash, a SIGKILL, a server killed with -9).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from ember import wire

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
KILL_WAIT = 2.0  # seconds for killed processes to be gone (SIGKILL is not instantaneous)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send us `sig` when our parent dies, so no child outlives the server. Linux
    means the parent *thread*: fork or spawn from a thread that outlives the child."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> None:
    """Orphans of our descendants are reparented to us, not to init: they stay in our tree.
    (Not inherited across fork: a forked replica calls it again.)"""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1)


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process below it (zombies left out)."""
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        if not _alive(current):
            continue
        tree.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
    return tree


def carrying(replica_ids: Collection[str]) -> list[int]:
    """Live processes whose environment names one of these replicas (/proc is our PID
    namespace's: a sandbox sees its own processes, the host sees them all)."""
    markers = {f"{wire.REPLICA_ID_ENV}={replica_id}".encode() for replica_id in replica_ids}
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not markers.isdisjoint(_environ(int(entry.name))):
            found.append(int(entry.name))
    return [pid for pid in found if _alive(pid)]


def kill(pids: Iterable[int]) -> None:
    """SIGKILL each of `pids`; those already gone (or not ours to kill) are skipped."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything below it; return once they are gone."""
    _kill_until_gone(lambda: set(process_tree(pid)))


def kill_replicas(replica_ids: Collection[str]) -> None:
    """SIGKILL what these replicas left: every process that carries one of their ids, and
    everything below those (what a subreaper adopted need not carry it); return once gone."""
    _kill_until_gone(lambda: _units(replica_ids))


def end_replica(replica_id: str) -> None:
    """A replica runtime's last act: kill everything it started, below it in the tree or carrying
    its id elsewhere, so nothing of it outlives it. Its ancestors carry the id too (bwrap's init
    in a sandbox): they are spared."""
    spared = _ancestors(os.getpid())
    _kill_until_gone(
        lambda: (set(process_tree(os.getpid())) | _units([replica_id], spared)) - spared
    )


def _units(replica_ids: Collection[str], spared: Collection[int] = ()) -> set[int]:
    """The processes that carry these ids (but those spared), with everything below them."""
    roots = set(carrying(replica_ids)).difference(spared)
    return {pid for root in roots for pid in process_tree(root)}


def _kill_until_gone(find: Callable[[], set[int]]) -> None:
    """Kill what `find` finds until it finds nothing (what forked meanwhile included), or for
    KILL_WAIT at most (a process stuck in the kernel, in D state, dies when it comes out)."""
    deadline = time.monotonic() + KILL_WAIT
    while (left := find()) and time.monotonic() < deadline:
        kill(left)
        time.sleep(0.005)


def _ancestors(pid: int) -> set[int]:
    """`pid` and its parent, grandparent, ... up to the top of our PID namespace."""
    found = set()
    while pid > 0 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running, or at least not a zombie waiting to be reaped (killing one does nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
