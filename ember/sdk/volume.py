"""Volume: a named folder of files that functions mount; a replica's writes are private until
`commit()`, and other replicas see them after `reload()`.

Inside a replica, `commit()` and `reload()` work on that replica's own copy of the volume, on
disk (ember/runtime/mounts.py). `listdir`, `read_file`, `batch_upload` and `remove_file` go
through the server's API from anywhere, and files travel in chunks, never whole in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from ember import wire
from ember.runtime.mounts import WorkingCopy, working_copy
from ember.runtime.volumes import VolumeError, check_name, volume_path
from ember.sdk.client import Client
from ember.sdk.config import in_replica
from ember.sdk.exceptions import Error, InvalidError, error_from_wire
from ember.sdk.synchronizer import live, run_async, run_sync

if TYPE_CHECKING:
    import httpx

CHUNK = 1 << 20
FileEntry = wire.FileEntry
FileEntryType = wire.FileEntryType
Progress = Callable[[int], None]  # called with the size of each chunk sent

_created: set[str] = set()  # volumes this process made sure exist (create_if_missing)


class Volume:
    """A persistent, named folder of files shared by functions and replicas.

    A function mounts it at a path of its choice; what a replica writes there stays its own
    until `commit()`, and other replicas see committed files after `reload()` (or when they
    start). Concurrent commits: the last one wins, nothing is merged.

    Example:
        vol = ember.Volume.from_name("models", create_if_missing=True)

        @app.function(volumes={"/models": vol})
        def download() -> None:
            Path("/models/weights.bin").write_bytes(fetch_weights())
            vol.commit()
    """

    def __init__(self, name: str, *, create_if_missing: bool = False) -> None:
        try:
            self.name = check_name(name)
        except VolumeError as exc:
            raise InvalidError(str(exc)) from None
        self.create_if_missing = create_if_missing

    def __repr__(self) -> str:
        return f"<ember.Volume {self.name}>"

    @classmethod
    def from_name(cls, name: str, *, create_if_missing: bool = False) -> Volume:
        """The volume `name` (made with `ember volume create NAME`); with `create_if_missing`,
        the deploy, or the first call that needs it, creates it."""
        return cls(name, create_if_missing=create_if_missing)

    # -- inside a replica: its own copy ----------------------------------------------------

    @live
    async def commit(self) -> None:
        """Make this replica's copy of the mounted volume the volume's committed state."""
        await _run_local(self._local("commit").commit)

    @live
    async def reload(self) -> None:
        """Replace this replica's copy with the latest commit; uncommitted changes are lost."""
        await _run_local(self._local("reload").reload)

    def _local(self, action: str) -> WorkingCopy:
        copy = working_copy(self.name)
        if copy is not None:
            return copy
        if in_replica():
            mount = f"volumes={{'/data': ember.Volume.from_name({self.name!r})}}"
            raise InvalidError(
                f"volume {self.name!r} is not mounted by this function, so there is nothing to "
                f"{action}; mount it with {mount}"
            )
        raise InvalidError(
            f"Volume.{action}() acts on the copy of a function that mounts the volume; outside "
            "one, batch_upload() and remove_file() commit by themselves"
        )

    # -- anywhere: through the server ------------------------------------------------------

    @live
    async def listdir(self, path: str, *, recursive: bool = False) -> list[wire.FileEntry]:
        """Entries under `path` ("/" is the volume's root), or the entry of the file at `path`."""
        params = {"path": _checked(path), "recursive": recursive}
        data = await _request(self, "GET", "entries", params=params)
        return [wire.FileEntry.model_validate(entry) for entry in data.json()]

    @live
    async def read_file(self, path: str) -> AsyncIterator[bytes]:
        """Yield the file's bytes in chunks as they arrive."""
        await _ensure(self)
        url = f"/api/v1/volumes/{self.name}/files"
        async with Client.from_settings().stream("GET", url, params={"path": _checked(path)}) as r:
            async for chunk in r.aiter_bytes(CHUNK):
                yield chunk

    @live
    async def remove_file(self, path: str, recursive: bool = False) -> None:
        """Remove a file, or a folder with `recursive=True`, as one new commit."""
        params = {"path": _checked(path), "recursive": recursive}
        await _request(self, "DELETE", "files", params=params)

    def batch_upload(
        self, force: bool = False, *, on_progress: Progress | None = None
    ) -> BatchUpload:
        """Files to upload, sent when the `with` block ends and committed as one (all or none).

        Example:
            with vol.batch_upload() as batch:
                batch.put_file("weights.bin", "/weights.bin")
                batch.put_directory("tokenizer/", "/tokenizer")
        """
        return BatchUpload(self, force, on_progress)


class BatchUpload:
    """Files to put in a volume; an existing file is refused unless `force`, a folder always."""

    def __init__(self, volume: Volume, force: bool, on_progress: Progress | None) -> None:
        self.volume, self.force, self.on_progress = volume, force, on_progress
        self.files: list[tuple[Path | BinaryIO, str]] = []

    def put_file(self, local_file: str | Path | BinaryIO, remote_path: str) -> None:
        """Upload a local file (a path, or an open binary file) to `remote_path`."""
        if not volume_path(_checked(remote_path)):
            raise InvalidError("put_file needs a remote path inside the volume, not its root")
        if isinstance(local_file, str | Path):
            local_file = Path(local_file)
            if not local_file.is_file():
                raise FileNotFoundError(f"no local file {str(local_file)!r} to upload")
        self.files.append((local_file, remote_path))

    def put_directory(
        self, local_path: str | Path, remote_path: str, recursive: bool = True
    ) -> None:
        """Upload the files of a local folder (and its subfolders) under `remote_path`."""
        folder = Path(local_path)
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(folder)!r} is not a local folder")
        base = _checked(remote_path).rstrip("/")
        for file in sorted(folder.rglob("*") if recursive else folder.glob("*")):
            if file.is_file():
                self.put_file(file, f"{base}/{file.relative_to(folder).as_posix()}")

    def __enter__(self) -> BatchUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            run_sync(self._upload())

    async def __aenter__(self) -> BatchUpload:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await run_async(self._upload())

    async def _upload(self) -> None:
        if not self.files:
            return
        start = wire.UploadStart(paths=[remote for _, remote in self.files], force=self.force)
        response = await _request(self.volume, "POST", "uploads", json=start.model_dump())
        batch = f"/api/v1/volumes/{self.volume.name}/uploads/{response.json()['upload_id']}"
        client = Client.from_settings()
        try:
            for local, remote in self.files:
                body = _chunks(local, self.on_progress)
                await client.request("PUT", f"{batch}/files", params={"path": remote}, content=body)
            commit = wire.UploadCommit(force=self.force).model_dump()
            await client.request("POST", f"{batch}/commit", json=commit)
        except BaseException:
            with contextlib.suppress(Error):
                await client.request("DELETE", batch)
            raise


def _checked(path: str) -> str:
    try:
        volume_path(path)
    except VolumeError as exc:
        raise InvalidError(str(exc)) from None
    return path


async def _run_local(action: Callable[[], None]) -> None:
    try:
        await asyncio.to_thread(action)
    except VolumeError as exc:
        raise error_from_wire(exc.type_name, str(exc)) from None


async def _ensure(volume: Volume) -> None:
    if volume.create_if_missing and volume.name not in _created:
        body = wire.VolumeCreate(name=volume.name, exist_ok=True).model_dump()
        await Client.from_settings().request("POST", "/api/v1/volumes", json=body)
        _created.add(volume.name)


async def _request(volume: Volume, method: str, action: str, **kwargs: object) -> httpx.Response:
    await _ensure(volume)
    url = f"/api/v1/volumes/{volume.name}/{action}"
    return await Client.from_settings().request(method, url, **kwargs)


async def _chunks(local: Path | BinaryIO, on_progress: Progress | None) -> AsyncIterator[bytes]:
    with local.open("rb") if isinstance(local, Path) else contextlib.nullcontext(local) as f:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            if on_progress is not None:
                on_progress(len(chunk))
            yield chunk
