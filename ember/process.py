"""Process plumbing shared by the server, replicas and engines: dying with the parent."""

from __future__ import annotations

import ctypes
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send us `sig` when our parent dies, so no child outlives the server. Linux
    means the parent *thread*: fork or spawn from a thread that outlives the child."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, sig)
