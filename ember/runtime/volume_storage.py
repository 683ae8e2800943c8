"""Where volumes live: a folder of this host (`local`) or a filesystem every node mounts (`shared`).

Both drivers keep the layout of runtime/volumes.py and its commit/reload semantics (snapshots
never written in place, HEAD swapped by a rename under the volume's lock, last commit wins).
They differ in what a cluster needs:

- `LocalFolder` ($EMBER_HOME/volumes, the default): locks are `flock`; working copies sit
  beside the trees (`.replicas/`), on the same filesystem, so copies are cheap. Only replicas
  on the server's host can mount these volumes.
- `SharedFilesystem` (`ember server --volumes-path`, a folder every node mounts at the same
  path: NFSv4, CephFS, ...): locks are open-file-description record locks (`F_OFD_SETLK`),
  which network filesystems carry between machines, as `flock` is not everywhere, and which,
  unlike classic `fcntl` locks, belong to the open file rather than the process (a process
  never loses one because another of its threads closed the same file). HEAD is read under a
  shared lock: taking a lock makes an NFS client revalidate what it cached, so a replica on
  another node sees a commit at once. Working copies stay on the node's own disk (the
  replica's reads and writes stay local; only commit and reload cross the network).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

KINDS = ("local", "shared")


class VolumeStorage:
    """What the two drivers share; how they lock is theirs (`_lock`, `read_lock`)."""

    kind: ClassVar[str]

    def __init__(self, root: Path) -> None:
        self.root = root

    def working_root(self, scratch: Path | None) -> Path:
        """Where replicas keep their working copies (`.replicas/<id>/` below it)."""
        return self.root

    @contextlib.contextmanager
    def exclusive(self, path: Path, wait: bool = True) -> Iterator[None]:
        """Hold an exclusive lock on `path` (created if missing); BlockingIOError if `wait`
        is False and another holder has it. Freed by the kernel if the holder dies."""
        with path.open("a") as f:
            self._lock(f.fileno(), wait)
            yield

    def _lock(self, fd: int, wait: bool) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def read_lock(self, path: Path) -> Iterator[None]:
        """Held while HEAD is read (never while holding `exclusive` on the same path)."""
        yield

    def held(self, path: Path) -> bool:
        """Whether someone holds `path`'s lock (a commit under way, on any node)."""
        try:
            with self.exclusive(path, wait=False):
                return False
        except BlockingIOError:
            return True
        except OSError:
            return True  # cannot tell: keep it


class LocalFolder(VolumeStorage):
    kind = "local"

    def _lock(self, fd: int, wait: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


class SharedFilesystem(VolumeStorage):
    kind = "shared"

    def working_root(self, scratch: Path | None) -> Path:
        return scratch if scratch is not None else self.root

    def _lock(self, fd: int, wait: bool) -> None:
        _ofd_lock(fd, fcntl.F_WRLCK, wait)

    @contextlib.contextmanager
    def read_lock(self, path: Path) -> Iterator[None]:
        try:
            f = path.open("r")
        except FileNotFoundError:  # no volume (yet): the read says so itself
            yield
            return
        with f:
            _ofd_lock(f.fileno(), fcntl.F_RDLCK, wait=True)
            yield


def _ofd_lock(fd: int, kind: int, wait: bool) -> None:
    """A whole-file open-file-description lock (Linux 3.15+; NFS carries it as a POSIX lock)."""
    command = fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK  # type: ignore[attr-defined]
    # struct flock: l_type, l_whence, l_start, l_len (0: to the end), l_pid (0 for OFD locks)
    request = struct.pack("hhqqi4x", kind, os.SEEK_SET, 0, 0, 0)
    try:
        fcntl.fcntl(fd, command, request)
    except OSError as exc:
        if not wait and exc.errno in (errno.EAGAIN, errno.EACCES):  # held by another
            raise BlockingIOError(exc.errno, "locked") from None
        raise


def storage_for(kind: str, root: Path) -> VolumeStorage:
    """The driver named `kind` ("local" or "shared") over `root`."""
    if kind == "shared":
        return SharedFilesystem(root)
    if kind == "local":
        return LocalFolder(root)
    raise ValueError(f"volume storage {kind!r} is not one of {', '.join(KINDS)}")
