"""Volumes on the server: records in the store, trees on disk, the API's reads and writes.

A write from outside a replica (an upload batch, a removal) makes one new snapshot: HEAD's tree
hard-linked (snapshot files are never written in place, so sharing them is safe; working copies
never share them), then changed. An upload batch is staged file by file under
`<name>/uploads/<id>/`, streamed to disk in chunks, and committed as one snapshot: all of it or
nothing. Blocking file work runs in threads, and the store on its own (AsyncStore).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import stat
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import BinaryIO

from ember import wire
from ember.names import MAX_PART, MAX_PATH, fits_filesystem, shown
from ember.runtime.mounts import check_mount_path, ensure_mount_link
from ember.runtime.volume_storage import VolumeStorage
from ember.runtime.volumes import (
    AlreadyExists,
    PathNotFound,
    VolumeError,
    VolumeTree,
    check_name,
    not_found,
    volume_path,
)
from ember.server.errors import ApiError
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import Store

CHUNK = 1 << 20
_STATUS = {"NotFoundError": 404, "PathNotFoundError": 404, "AlreadyExistsError": 409}


def as_api_error(exc: VolumeError) -> ApiError:
    return ApiError(_STATUS.get(exc.type_name, 400), exc.type_name, str(exc))


class Volumes:
    def __init__(self, store: AsyncStore, storage: VolumeStorage, on_cluster: bool = False) -> None:
        """`on_cluster`: replicas run on other machines, which see only shared storage."""
        self._store, self.storage, self.root = store, storage, storage.root
        self._on_cluster = on_cluster

    def start(self) -> None:
        """Drop the upload batches of a previous run: their clients are gone."""
        for uploads in self.root.glob("*/uploads"):
            shutil.rmtree(uploads, ignore_errors=True)

    # -- records --------------------------------------------------------------------------

    async def create(self, name: str, exist_ok: bool = False) -> wire.VolumeInfo:
        check_name(name)
        if await self._store.run(Store.create_volume, name) is None:
            if exist_ok:
                return await self.info(name)
            raise AlreadyExists(f"volume {name!r} exists already; see `ember volume ls {name}`")
        try:
            VolumeTree(self.storage, name).create()
        except BaseException:
            await self._store.run(Store.delete_volume, name)
            raise
        return await self.info(name)

    async def tree(self, name: str) -> VolumeTree:
        if await self._store.run(Store.get_volume, check_name(name)) is None:
            raise not_found(name)
        return VolumeTree(self.storage, name)

    async def info(self, name: str) -> wire.VolumeInfo:
        created_at = await self._store.run(Store.get_volume, check_name(name))
        if created_at is None:
            raise not_found(name)
        committed_at = VolumeTree(self.storage, name).committed_at()
        return wire.VolumeInfo(name=name, created_at=created_at, committed_at=committed_at)

    async def all(self) -> list[wire.VolumeInfo]:
        return [
            wire.VolumeInfo(
                name=name,
                created_at=created,
                committed_at=VolumeTree(self.storage, name).committed_at(),
            )
            for name, created in await self._store.run(Store.list_volumes)
        ]

    async def delete(self, name: str) -> None:
        """Delete the volume and its files; replicas that mount it fail to start from now on."""
        tree = await self.tree(name)
        await self._store.run(Store.delete_volume, name)
        await asyncio.to_thread(tree.delete)

    # -- deploys --------------------------------------------------------------------------

    async def check_deploy(self, request: wire.DeployRequest) -> None:
        """Every volume exists (or will be created) and every mount path can be made; mount
        paths are created here, so one that cannot be fails the deploy, not a replica."""
        volumes = await self._store.run(Store.list_volumes)
        known = {name for name, _ in volumes} | set(request.create_volumes)
        for spec in request.functions:
            if spec.volumes and self._on_cluster and self.storage.kind != "shared":
                raise ApiError(
                    400,
                    "InvalidError",
                    f"{spec.name} mounts volumes, which this server keeps on its own disk, and "
                    "its replicas run on a Ray cluster whose nodes cannot see it: start the "
                    "server with --volumes-path on a filesystem every node mounts "
                    "(docs/cluster.md)",
                )
            try:
                paths = sorted(check_mount_path(p) for p in spec.volumes)
                for name in spec.volumes.values():
                    check_name(name)
                for outer, inner in itertools.pairwise(paths):
                    if inner == outer or inner.startswith(outer + "/"):
                        raise VolumeError(f"mount paths {outer!r} and {inner!r} overlap")
            except VolumeError as exc:
                raise ApiError(400, "InvalidError", f"{spec.name}: {exc}") from None
            for name in spec.volumes.values():
                if name not in known:
                    raise ApiError(
                        400,
                        "NotFoundError",
                        f"{spec.name} mounts volume {name!r}, which does not exist; create it "
                        f"with `ember volume create {name}`, or use "
                        f"ember.Volume.from_name({name!r}, create_if_missing=True)",
                    )
            for path in paths:
                try:
                    ensure_mount_link(path)
                except VolumeError as exc:
                    raise ApiError(400, "InvalidError", f"{spec.name}: {exc}") from None

    async def create_missing(self, request: wire.DeployRequest) -> None:
        for name in request.create_volumes:
            await self.create(name, exist_ok=True)

    # -- reads ----------------------------------------------------------------------------

    async def entries(self, name: str, path: str, recursive: bool) -> list[wire.FileEntry]:
        rel, tree = _path(path), await self.tree(name)
        try:
            return await asyncio.to_thread(
                tree.read, partial(_entries, rel=rel, recursive=recursive)
            )
        except FileNotFoundError:
            raise _missing(name, path) from None

    async def open_file(self, name: str, path: str) -> tuple[BinaryIO, int]:
        """An open file of HEAD (it stays readable even if a commit prunes its snapshot)."""
        rel, tree = _path(path), await self.tree(name)
        try:
            return await asyncio.to_thread(tree.read, partial(_open, rel=rel))
        except FileNotFoundError:
            raise _missing(name, path) from None
        except IsADirectoryError:
            raise VolumeError(
                f"{path!r} is a directory in volume {name!r}; see `ember volume ls {name} {path}`"
            ) from None

    # -- writes ---------------------------------------------------------------------------

    async def remove(self, name: str, path: str, recursive: bool) -> None:
        rel, tree = _path(path), await self.tree(name)
        change = partial(_remove, rel=rel, recursive=recursive, shown=path)
        try:
            await asyncio.to_thread(_update, tree, change)
        except FileNotFoundError:
            raise _missing(name, path) from None

    async def start_upload(self, name: str, paths: list[str], force: bool) -> str:
        """Open an upload batch; refuses at once a batch that would replace files without
        `force` (the commit checks again)."""
        tree = await self.tree(name)
        rels = [_upload_path(p) for p in paths]
        tree.read(partial(_check_targets, rels=rels, force=force))
        upload_id = uuid.uuid4().hex
        for part in ("files", "parts"):
            (tree.dir / "uploads" / upload_id / part).mkdir(parents=True)
        return upload_id

    async def receive(
        self, name: str, upload_id: str, path: str, chunks: AsyncIterator[bytes]
    ) -> int:
        """Stream one file of a batch to disk, chunk by chunk; returns its size. It is written
        as a new file and renamed into place: a staged file may already be linked into a
        snapshot, and those are never written in place."""
        batch = await self._upload_dir(name, upload_id)
        staged = _within(batch / "files", _upload_path(path), create=True)
        if staged.is_dir():
            raise VolumeError(f"{path!r} is both a file and a folder in this upload")
        part = batch / "parts" / uuid.uuid4().hex
        size = 0
        with part.open("wb") as f:
            async for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())
        os.replace(part, staged)
        return size

    async def finish_upload(self, name: str, upload_id: str, force: bool) -> int:
        """Commit the batch as one snapshot; returns the number of files."""
        batch = await self._upload_dir(name, upload_id)
        tree = await self.tree(name)
        try:
            rels = await asyncio.to_thread(_files_under, batch / "files")
            await asyncio.to_thread(_update, tree, partial(_place, batch / "files", rels, force))
        finally:
            await asyncio.to_thread(shutil.rmtree, batch, True)
        return len(rels)

    async def abort_upload(self, name: str, upload_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, await self._upload_dir(name, upload_id), True)

    async def _upload_dir(self, name: str, upload_id: str) -> Path:
        folder = (await self.tree(name)).dir / "uploads" / upload_id
        if not re.fullmatch(r"[0-9a-f]{32}", upload_id) or not folder.is_dir():
            raise VolumeError(f"no upload batch {upload_id!r} in volume {name!r}; start another")
        return folder


def _missing(name: str, path: str) -> PathNotFound:
    return PathNotFound(f"{path!r} does not exist in volume {name!r}")


def _path(path: str) -> str:
    """The path inside a volume (volume_path's rules), refused if no filesystem could hold it."""
    rel = volume_path(path)
    if not fits_filesystem(rel):
        raise VolumeError(
            f"volume path {shown(path)} is too long: at most {MAX_PATH} bytes, "
            f"{MAX_PART} per file or folder name"
        )
    return rel


def _upload_path(path: str) -> str:
    rel = _path(path)
    if not rel:
        raise VolumeError("an uploaded file needs a path inside the volume, not its root")
    return rel


def _update(tree: VolumeTree, change: Callable[[Path], None]) -> str:
    """A new snapshot: HEAD's tree hard-linked, then `change`d (retried if HEAD moves)."""
    return tree.read(lambda base: tree.commit(partial(_linked, base, change)))


def _linked(base: Path, change: Callable[[Path], None], staging: Path) -> None:
    shutil.copytree(base, staging, symlinks=True, copy_function=os.link)
    change(staging)


def _within(tree: Path, rel: str, create: bool = False) -> Path:
    """`tree/rel`, each parent checked to be a real folder (a link could lead out of the tree)."""
    *parents, leaf = rel.split("/")
    folder = tree
    for part in parents:
        folder = folder / part
        try:
            info = os.lstat(folder)
        except FileNotFoundError:
            if not create:
                raise
            folder.mkdir()
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise VolumeError(f"{str(folder.relative_to(tree))!r} is a file or link, not a folder")
    return folder / leaf


def _inside(tree: Path, rel: str) -> Path:
    """`tree/rel` with links resolved, refused if they lead out of the tree."""
    real, root = (tree / rel).resolve(), tree.resolve()
    if real != root and root not in real.parents:
        raise VolumeError(f"{rel!r} is a link that leads out of the volume")
    return real


def _entry(path: str, info: os.stat_result) -> wire.FileEntry:
    if stat.S_ISLNK(info.st_mode):
        kind = wire.FileEntryType.SYMLINK
    elif stat.S_ISDIR(info.st_mode):
        kind = wire.FileEntryType.DIRECTORY
    else:
        kind = wire.FileEntryType.FILE
    size = 0 if kind is wire.FileEntryType.DIRECTORY else info.st_size
    return wire.FileEntry(path=path, type=kind, size=size, mtime=info.st_mtime)


def _entries(tree: Path, rel: str, recursive: bool) -> list[wire.FileEntry]:
    """A file's own entry, or a folder's entries (all below it, if `recursive`)."""
    base = _inside(tree, rel)
    info = os.stat(base)
    if not stat.S_ISDIR(info.st_mode):
        return [_entry(rel, info)]
    found, pending = [], [""]
    while pending:
        sub = pending.pop()
        with os.scandir(base / sub) as it:
            for item in it:
                child = f"{sub}/{item.name}" if sub else item.name
                found.append(
                    _entry(f"{rel}/{child}" if rel else child, item.stat(follow_symlinks=False))
                )
                if recursive and item.is_dir(follow_symlinks=False):
                    pending.append(child)
    return sorted(found, key=lambda e: e.path)


def _open(tree: Path, rel: str) -> tuple[BinaryIO, int]:
    f = _inside(tree, rel).open("rb")
    return f, os.fstat(f.fileno()).st_size


def _remove(tree: Path, rel: str, recursive: bool, shown: str) -> None:
    if not rel and not recursive:
        raise VolumeError("emptying a volume's root needs recursive=True (`rm -r`)")
    for target in [_within(tree, rel)] if rel else list(tree.iterdir()):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            if not recursive:
                raise VolumeError(f"{shown!r} is a directory; pass recursive=True (`rm -r`)")
            shutil.rmtree(target)
        else:
            target.unlink()


def _files_under(folder: Path) -> list[str]:
    return sorted(
        str(Path(parent, name).relative_to(folder))
        for parent, _dirs, files in os.walk(folder)
        for name in files
    )


def _check_targets(tree: Path, rels: list[str], force: bool) -> list[Path]:
    """Where each upload lands in `tree`; refuses folders, and existing files unless `force`."""
    targets = []
    for rel in rels:
        try:
            target = _within(tree, rel)
            info = os.lstat(target)
        except FileNotFoundError:
            targets.append(tree / rel)
            continue
        if stat.S_ISDIR(info.st_mode):
            raise VolumeError(f"cannot upload to {rel!r}: it is a folder in the volume")
        if not force:
            raise AlreadyExists(f"{rel!r} exists in the volume; pass force=True (`--force`)")
        targets.append(target)
    return targets


def _place(staged: Path, rels: list[str], force: bool, tree: Path) -> None:
    for rel, target in zip(rels, _check_targets(tree, rels, force), strict=True):
        _within(tree, rel, create=True)
        if os.path.lexists(target):
            target.unlink()  # the old file is another snapshot's: never write into it
        os.link(staged / rel, target)
