"""`ember volume create|list|ls|put|get|rm|delete`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath

import typer
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from ember import wire
from ember.cli.output import console, err, friendly_errors, print_json
from ember.runtime.volumes import volume_path
from ember.sdk.client import Client
from ember.sdk.exceptions import AlreadyExistsError
from ember.sdk.synchronizer import run_sync
from ember.sdk.volume import Volume

cli = typer.Typer(
    help="Manage volumes (persistent files that functions mount).", no_args_is_help=True
)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


@contextmanager
def _progress(description: str, total: int) -> Iterator[Progress]:
    """A byte-counting progress bar on stderr (stdout stays for data, as with `get ... -`)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        progress.add_task(description, total=total)
        yield progress


@cli.command("create")
@friendly_errors
def create(name: str) -> None:
    """Create an empty volume."""
    body = wire.VolumeCreate(name=name).model_dump()
    data = run_sync(Client.from_settings().json("POST", "/api/v1/volumes", json=body))
    info = wire.VolumeInfo.model_validate(data)
    console.print(f"Created volume {info.name}")
    mount = f"volumes={{'/data': ember.Volume.from_name({name!r})}}"
    console.print(f"[dim]Mount it with {mount}[/dim]", highlight=False)


@cli.command("list")
@friendly_errors
def list_volumes(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List volumes."""
    data = run_sync(Client.from_settings().json("GET", "/api/v1/volumes"))
    volumes = [wire.VolumeInfo.model_validate(v) for v in data]
    if json:
        print_json(volumes)
        return
    table = Table("name", "created", "last commit")
    for volume in volumes:
        table.add_row(volume.name, _when(volume.created_at), _when(volume.committed_at))
    console.print(table)


@cli.command("ls")
@friendly_errors
def ls(
    name: str,
    path: str = typer.Argument("/", help="A folder or file in the volume."),
    recursive: bool = typer.Option(False, "-r", "--recursive", help="List subfolders too."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the files of a volume (its last commit)."""
    entries = Volume.from_name(name).listdir(path, recursive=recursive)
    if json:
        print_json(entries)
        return
    table = Table("path", "type", "size", "modified")
    for entry in entries:
        size = "" if entry.type is wire.FileEntryType.DIRECTORY else decimal(entry.size)
        table.add_row(entry.path, entry.type.value, size, _when(entry.mtime))
    console.print(table)


@cli.command("put")
@friendly_errors
def put(
    name: str,
    local: Path = typer.Argument(..., help="A local file or folder."),
    remote: str = typer.Argument("/", help="Where in the volume; a folder if it ends in '/'."),
    force: bool = typer.Option(False, "-f", "--force", help="Replace files that exist."),
) -> None:
    """Upload a file, or a folder's files, to a volume, as one commit."""
    volume = Volume.from_name(name)
    if local.is_dir():
        sizes = [f.stat().st_size for f in local.rglob("*") if f.is_file()]
    elif local.is_file():
        sizes = [local.stat().st_size]
        remote = remote + local.name if remote.endswith("/") else remote
    else:
        raise typer.BadParameter(f"no local file or folder {str(local)!r}")
    with _progress(f"put {local.name}", sum(sizes)) as progress:
        task = progress.task_ids[0]
        with volume.batch_upload(force, on_progress=lambda n: progress.advance(task, n)) as batch:
            if local.is_dir():
                batch.put_directory(local, remote)
            else:
                batch.put_file(local, remote)
    console.print(f"Uploaded {len(sizes)} file(s), {decimal(sum(sizes))}, to {name}:{remote}")


@cli.command("get")
@friendly_errors
def get(
    name: str,
    remote: str = typer.Argument(..., help="A file or folder in the volume."),
    local: str = typer.Argument(".", help="Where to put it; '-' writes a file to stdout."),
    force: bool = typer.Option(False, "-f", "--force", help="Replace local files that exist."),
) -> None:
    """Download a file, or a folder's files, from a volume."""
    volume = Volume.from_name(name)
    entries = volume.listdir(remote, recursive=True)
    base = volume_path(remote)
    is_file = (
        len(entries) == 1 and entries[0].path == base and entries[0].type is wire.FileEntryType.FILE
    )
    if local == "-":
        if not is_file:
            raise typer.BadParameter("only a single file can be written to stdout")
        for chunk in volume.read_file(remote):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    plan = _download_plan(entries, base, Path(local), is_file)
    existing = [str(dest) for _, dest, _ in plan if dest.exists()]
    if existing and not force:
        raise AlreadyExistsError(f"{existing[0]} exists here; pass --force to replace it")
    total = sum(size for _, _, size in plan)
    with _progress(f"get {PurePosixPath(base).name or name}", total) as progress:
        task = progress.task_ids[0]
        for path, dest, _ in plan:
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(f".{dest.name}.part")
            with part.open("wb") as f:
                for chunk in volume.read_file(path):
                    f.write(chunk)
                    progress.advance(task, len(chunk))
            os.replace(part, dest)  # a failed download leaves no half file at `dest`
    console.print(f"Downloaded {len(plan)} file(s), {decimal(total)}, from {name}:{remote}")


def _download_plan(
    entries: list[wire.FileEntry], base: str, local: Path, is_file: bool
) -> list[tuple[str, Path, int]]:
    """(path in the volume, local destination, size) of each file to download."""
    name = PurePosixPath(base).name
    if is_file:
        dest = local / name if local.is_dir() else local
        return [(entries[0].path, dest, entries[0].size)]
    root = local / name if name and local.is_dir() else local
    return [
        (e.path, root / (e.path[len(base) + 1 :] if base else e.path), e.size)
        for e in entries
        if e.type is wire.FileEntryType.FILE
    ]


@cli.command("rm")
@friendly_errors
def rm(
    name: str,
    path: str,
    recursive: bool = typer.Option(False, "-r", "--recursive", help="Remove a folder."),
) -> None:
    """Remove a file (or with -r a folder) from a volume, as one commit."""
    Volume.from_name(name).remove_file(path, recursive=recursive)
    console.print(f"Removed {name}:{path}")


@cli.command("delete")
@friendly_errors
def delete(
    name: str, yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask to confirm.")
) -> None:
    """Delete a volume and every file in it; functions that mount it fail to start."""
    if not yes:
        typer.confirm(f"Delete volume {name} and every file in it?", abort=True)
    run_sync(Client.from_settings().request("DELETE", f"/api/v1/volumes/{name}"))
    console.print(f"Deleted {name}")
