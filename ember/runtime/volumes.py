"""Volumes on disk: immutable committed snapshots, a HEAD naming the current one, atomic commits.

Layout under the server's volume root (`$EMBER_HOME/volumes`):

    <name>/HEAD                   the current snapshot's id, replaced atomically (write + rename)
    <name>/snapshots/<id>/        committed trees, never written once renamed into place
    <name>/staging/<pid>-<hex>/   a commit being built (removed later if its process died)
    <name>/lock                   held while a commit renames its tree, swaps HEAD, prunes
    <name>/uploads/<id>/          an upload batch being received (server/volumes.py)
    .replicas/<replica id>/       a replica's working copies (see runtime/mounts.py)

A commit builds its tree in staging, fsyncs it, renames it into `snapshots/` and then swaps
HEAD, so a crash at any point leaves the last committed state. Concurrent commits: the last to
swap HEAD wins; nothing is merged. Each commit deletes the snapshots other than the new HEAD and
the one before it; a reader that loses its snapshot to that retries from the new HEAD.

Used by the server (create, upload, list, download) and by replicas (commit, reload). Where the
root is, and how its locks are taken, is the storage driver's (runtime/volume_storage.py): a
folder of the server's host, or a shared filesystem every node of a cluster mounts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

from ember import names
from ember.runtime.volume_storage import VolumeStorage

T = TypeVar("T")

READ_ATTEMPTS = 5  # reads restart on the new HEAD when a commit prunes theirs


class VolumeError(Exception):
    """A volume operation that cannot be done; `type_name` names the error on the wire."""

    type_name = "InvalidError"


class VolumeNotFound(VolumeError):
    type_name = "NotFoundError"


class PathNotFound(VolumeError):
    type_name = "PathNotFoundError"


class AlreadyExists(VolumeError):
    type_name = "AlreadyExistsError"


def check_name(name: str) -> str:
    try:
        return names.check_name("volume", name)
    except names.InvalidName as exc:
        raise VolumeError(str(exc)) from None


def volume_path(path: str) -> str:
    """A path inside a volume, relative to its root ("" is the root). A leading '/' means the
    volume's root, as in Modal (`vol.listdir("/")`); '..' is refused."""
    parts = [p for p in PurePosixPath(path).parts if p.strip("/") and p != "."]
    if ".." in parts or "\0" in path:
        raise VolumeError(
            f"volume path {path!r} contains '..' (or a NUL); paths must stay inside the volume"
        )
    return "/".join(parts)


def not_found(name: str) -> VolumeNotFound:
    return VolumeNotFound(
        f"volume {name!r} does not exist; create it with `ember volume create {name}`"
    )


class VolumeTree:
    """One volume's folder: its snapshots, HEAD, and the commits that move HEAD."""

    def __init__(self, storage: VolumeStorage, name: str) -> None:
        self.name = check_name(name)
        self.storage = storage
        self.dir = storage.root / name
        self.snapshots = self.dir / "snapshots"

    def exists(self) -> bool:
        return (self.dir / "HEAD").exists()

    def head(self) -> str:
        with self.storage.read_lock(self.dir / "lock"):
            return self._read_head()

    def _read_head(self) -> str:
        try:
            return (self.dir / "HEAD").read_text().strip()
        except FileNotFoundError:
            raise not_found(self.name) from None

    def committed_at(self) -> float | None:
        with self.storage.read_lock(self.dir / "lock"), contextlib.suppress(FileNotFoundError):
            return (self.dir / "HEAD").stat().st_mtime
        return None

    def create(self) -> None:
        """An empty volume: one empty snapshot and HEAD naming it (leftovers are replaced)."""
        self.delete()
        snapshot_id = _new_id()
        (self.snapshots / snapshot_id).mkdir(parents=True)
        self._write_head(snapshot_id)

    def delete(self) -> None:
        """Remove the volume; a rename first, so no half-deleted volume is ever seen."""
        doomed = self.dir.with_name(f".deleted-{self.name}-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(self.dir, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def commit(self, build: Callable[[Path], None]) -> str:
        """Make `build(folder)` (which creates `folder`) the new HEAD; returns its id."""
        self.head()  # a deleted volume fails here, clearly
        staging = self.dir / "staging" / uuid.uuid4().hex[:12]
        alive = staging.with_suffix(".lock")  # held while we build: how pruning tells us alive
        try:
            staging.parent.mkdir(exist_ok=True)
            with self.storage.exclusive(alive):
                build(staging)
                _fsync_tree(staging)
                with self.storage.exclusive(self.dir / "lock"):
                    previous = self._read_head()
                    snapshot_id = _new_id()
                    os.rename(staging, self.snapshots / snapshot_id)
                    _fsync_dir(self.snapshots)
                    self._write_head(snapshot_id)
                    doomed = self._prunable(keep={snapshot_id, previous})
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, FileNotFoundError) and not self.exists():
                raise not_found(self.name) from None  # deleted while we built
            raise
        finally:
            alive.unlink(missing_ok=True)
        for path in doomed:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return snapshot_id

    def checkout(self, dest: Path) -> str:
        """Copy HEAD's tree to `dest`, as new files: writes there never reach a snapshot."""
        return self.read(lambda tree: _copy_tree(tree, dest))

    def read(self, fn: Callable[[Path], T]) -> T:
        """`fn(HEAD's tree)`, again on the new HEAD if a commit pruned the tree meanwhile."""
        for _ in range(READ_ATTEMPTS - 1):
            snapshot_id = self.head()
            try:
                return fn(self.snapshots / snapshot_id)
            except (FileNotFoundError, shutil.Error):
                if snapshot_id == self.head():
                    raise  # not pruned: a real error
        return fn(self.snapshots / self.head())

    def _write_head(self, snapshot_id: str) -> None:
        tmp = self.dir / f"HEAD.{os.getpid()}.tmp"
        with tmp.open("w") as f:
            f.write(snapshot_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / "HEAD")
        _fsync_dir(self.dir)

    def _prunable(self, keep: set[str]) -> list[Path]:
        """Old snapshots, and staging folders of processes that died mid-commit (their lock is
        free: process ids cannot tell, as every sandboxed replica has the same one in its own)."""
        doomed = [p for p in self.snapshots.iterdir() if p.name not in keep]
        for lock in (self.dir / "staging").glob("*.lock"):
            if not self.storage.held(lock):
                doomed += [lock, lock.with_suffix("")]
        return doomed


def _copy_tree(tree: Path, dest: Path) -> str:
    try:
        shutil.copytree(tree, dest, symlinks=True)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return tree.name


def _new_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a new tree to disk. Files with other links are committed snapshots' files, which
    were flushed when they were committed."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if info.st_nlink == 1 and stat.S_ISREG(info.st_mode):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(folder))
