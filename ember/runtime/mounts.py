"""A replica's private working copies of its volumes, seen at the mount paths it asked for.

A mount path is a symlink, made at deploy time, to `/proc/self/fd/1000/<hash of the path>`.
`/proc/self` is whichever process looks, so each replica resolves it through its own file
descriptor 1000, which it points at its own folder of mounts (`.replicas/<id>/mounts`: one
symlink per mount path, to a working copy). Replicas of one function, or of two functions that
mount volumes at the same path, never see each other's copies, as in containers. The price: a
program started with `subprocess` (which closes inherited descriptors) does not see the mount;
hand it `os.path.realpath(mount_path)`, the working copy's real folder.

Working copies are copies of HEAD's files, never hard links: a write in place through a link
would change the committed snapshot. `commit()` copies the working copy into a new snapshot;
`reload()` copies HEAD into a fresh folder, swaps the mount's link to it, and drops the old one
(uncommitted changes with it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ember import wire
from ember.runtime.volume_storage import VolumeStorage, storage_for
from ember.runtime.volumes import VolumeError, VolumeTree

MOUNTS_FD = 1000
_LINK_PREFIX = f"/proc/self/fd/{MOUNTS_FD}/"
SYSTEM_DIRS = (
    "/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc", "/boot",
    "/run",
)  # fmt: skip


def check_mount_path(path: str) -> str:
    """The normalised mount path, or a VolumeError saying why it cannot be one (no I/O)."""
    if not path.startswith("/"):
        raise VolumeError(f"volume mount path {path!r} must be absolute, e.g. '/models'")
    if ".." in path.split("/") or "\0" in path:
        raise VolumeError(f"volume mount path {path!r} must not contain '..'")
    normal = "/" + os.path.normpath(path).lstrip("/")
    if normal == "/":
        raise VolumeError("a volume cannot be mounted at '/'; choose a folder such as '/models'")
    for system in SYSTEM_DIRS:
        if normal == system or normal.startswith(system + "/"):
            raise VolumeError(
                f"volume mount path {path!r} is inside the system folder {system}; "
                "choose another, such as '/models' or '/data'"
            )
    return normal


def mount_link(path: str) -> str:
    """What the symlink at a (normalised) mount path points to, in every process."""
    return _LINK_PREFIX + hashlib.sha256(path.encode()).hexdigest()[:16]


def ensure_mount_link(path: str) -> None:
    """Create the mount path's symlink and its parent folders, or say why that cannot be."""
    link = Path(path)
    for parent in link.parents:
        if _is_mount_link(parent):
            raise VolumeError(
                f"volume mount path {path!r} is inside the mount path {str(parent)!r}"
            )
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolumeError(
            f"cannot create the folder {str(link.parent)!r} for volume mount path {path!r}: "
            f"{exc.strerror}; choose a path under a folder the Ember server's user can write to"
        ) from None
    try:
        os.symlink(mount_link(path), link)
    except FileExistsError:
        if not _is_mount_link(link) or os.readlink(link) != mount_link(path):
            kind = "a folder" if link.is_dir() else "a file or link"
            raise VolumeError(
                f"volume mount path {path!r} already exists as {kind}; Ember mounts a volume "
                "where nothing exists yet: choose another path, or remove it"
            ) from None
    except OSError as exc:
        raise VolumeError(
            f"cannot create volume mount path {path!r}: {exc.strerror}; choose a path under a "
            "folder the Ember server's user can write to"
        ) from None


def _is_mount_link(path: Path) -> bool:
    try:
        return os.readlink(path).startswith(_LINK_PREFIX)
    except OSError:
        return False


def replica_dir(root: Path, replica_id: str) -> Path:
    return root / ".replicas" / replica_id


def working_dir(spec: wire.ReplicaSpec, replica_id: str) -> Path | None:
    """Where the replica of `spec` keeps its working copies, as `Mounts` places them (None:
    the server passed no volume root)."""
    if spec.volume_root is None:
        return None
    scratch = Path(spec.volume_scratch) if spec.volume_scratch else None
    storage = storage_for(spec.volume_storage, Path(spec.volume_root))
    return replica_dir(storage.working_root(scratch), replica_id)


@dataclass
class WorkingCopy:
    """One volume's private copy in one replica, and the mount links that point at it."""

    tree: VolumeTree
    path: Path
    links: list[Path] = field(default_factory=list)
    # Inputs served at once (max_inputs > 1) may commit and reload at once.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def commit(self) -> None:
        """Make the working copy the volume's new HEAD (last writer wins)."""
        with self.lock:
            self.tree.commit(self._copy_to)

    def _copy_to(self, staging: Path) -> None:
        shutil.copytree(self.path, staging, symlinks=True)

    def reload(self) -> None:
        """Replace the working copy with HEAD's tree; uncommitted changes are dropped."""
        fresh = self.path.with_name(f"{self.tree.name}.{uuid.uuid4().hex[:8]}")
        with self.lock:
            self.tree.checkout(fresh)
            for link in self.links:
                _point(link, fresh)
            old, self.path = self.path, fresh
        shutil.rmtree(old, ignore_errors=True)


class Mounts:
    """The working copies of one replica, by volume name: in `scratch` (a node's own disk) if
    the storage keeps them apart from the trees, else beside them."""

    def __init__(
        self, storage: VolumeStorage, replica_id: str, scratch: Path | None = None
    ) -> None:
        self.storage = storage
        self.dir = replica_dir(storage.working_root(scratch), replica_id)
        self.copies: dict[str, WorkingCopy] = {}

    def mount(self, volumes: dict[str, str]) -> None:
        """Copy each volume's HEAD and make it visible at its mount paths, for this process."""
        if not volumes:
            return
        links = self.dir / "mounts"
        links.mkdir(parents=True)
        for raw_path, name in volumes.items():
            path = check_mount_path(raw_path)
            copy = self.copies.get(name)
            if copy is None:
                tree = VolumeTree(self.storage, name)
                work = self.dir / "volumes" / f"{name}.{uuid.uuid4().hex[:8]}"
                work.parent.mkdir(exist_ok=True)
                tree.checkout(work)
                copy = self.copies[name] = WorkingCopy(tree, work)
            link = links / mount_link(path).rsplit("/", 1)[1]
            _point(link, copy.path)
            copy.links.append(link)
            print(f"mounted volume {name!r} at {path}", flush=True)
        fd = os.open(links, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.dup2(fd, MOUNTS_FD)  # inheritable: exec'd children keep it unless they close it
        finally:
            os.close(fd)
        for raw_path in volumes:
            ensure_mount_link(check_mount_path(raw_path))

    def unmount(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _point(link: Path, target: Path) -> None:
    """(Re)point a symlink at `target` in one rename, so no reader sees it missing."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


_mounted: Mounts | None = None


def mount_volumes(spec: wire.ReplicaSpec, replica_id: str) -> Mounts:
    """Mount the replica's volumes, once, before the user's module is imported."""
    global _mounted
    volumes, root = spec.function.volumes, spec.volume_root
    if volumes and root is None:
        raise VolumeError("this server passed no volume root; is it older than the replica?")
    storage = storage_for(spec.volume_storage, Path(root or "."))
    scratch = Path(spec.volume_scratch) if spec.volume_scratch else None
    _mounted = Mounts(storage, replica_id, scratch)
    _mounted.mount(volumes)
    return _mounted


def working_copy(name: str) -> WorkingCopy | None:
    """The working copy of volume `name` in this replica, if its function mounts it."""
    return _mounted.copies.get(name) if _mounted is not None else None
