"""The volumes API: create, list, delete; list, download, remove and upload files.

An admin token may do all of it; a replica's token only works on the volumes its app mounts, and
cannot list or delete volumes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ember import wire
from ember.server.api.auth import plane_of, require_admin, require_token, require_volume
from ember.server.api.responses import errors
from ember.server.store.base import TokenRecord
from ember.server.volumes import CHUNK, Volumes

router = APIRouter(prefix="/api/v1/volumes", responses=errors(400, 401, 403, 404, 409))


async def volumes_of(
    name: str, request: Request, record: TokenRecord = Depends(require_token)
) -> Volumes:
    """The server's volumes, once the token is known to reach volume `name`."""
    plane = plane_of(request)
    require_volume(plane, record, name)
    return plane.volumes


@router.post("")
async def create_volume(
    body: wire.VolumeCreate, request: Request, record: TokenRecord = Depends(require_token)
) -> wire.VolumeInfo:
    plane = plane_of(request)
    require_volume(plane, record, body.name)
    return await plane.volumes.create(body.name, exist_ok=body.exist_ok)


@router.get("", dependencies=[Depends(require_admin)])
async def list_volumes(request: Request) -> list[wire.VolumeInfo]:
    return await plane_of(request).volumes.all()


@router.get("/{name}")
async def show_volume(name: str, volumes: Volumes = Depends(volumes_of)) -> wire.VolumeInfo:
    return await volumes.info(name)


@router.delete("/{name}", dependencies=[Depends(require_admin)])
async def delete_volume(name: str, request: Request) -> dict[str, str]:
    await plane_of(request).volumes.delete(name)
    return {"deleted": name}


@router.get("/{name}/entries")
async def list_entries(
    name: str,
    path: str = "/",
    recursive: bool = False,
    volumes: Volumes = Depends(volumes_of),
) -> list[wire.FileEntry]:
    return await volumes.entries(name, path, recursive)


@router.get("/{name}/files")
async def read_file(
    name: str, path: str, volumes: Volumes = Depends(volumes_of)
) -> StreamingResponse:
    f, size = await volumes.open_file(name, path)
    return StreamingResponse(
        _chunks(f),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )


async def _chunks(f: BinaryIO) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            yield chunk
    finally:
        f.close()


@router.delete("/{name}/files")
async def remove_file(
    name: str, path: str, recursive: bool = False, volumes: Volumes = Depends(volumes_of)
) -> dict[str, str]:
    await volumes.remove(name, path, recursive)
    return {"removed": path}


@router.post("/{name}/uploads")
async def start_upload(
    name: str, body: wire.UploadStart, volumes: Volumes = Depends(volumes_of)
) -> wire.UploadStarted:
    upload_id = await volumes.start_upload(name, body.paths, body.force)
    return wire.UploadStarted(upload_id=upload_id)


@router.put("/{name}/uploads/{upload_id}/files")
async def upload_file(
    name: str, upload_id: str, path: str, request: Request, volumes: Volumes = Depends(volumes_of)
) -> dict[str, object]:
    size = await volumes.receive(name, upload_id, path, request.stream())
    return {"path": path, "size": size}


@router.post("/{name}/uploads/{upload_id}/commit")
async def commit_upload(
    name: str, upload_id: str, body: wire.UploadCommit, volumes: Volumes = Depends(volumes_of)
) -> dict[str, int]:
    files = await volumes.finish_upload(name, upload_id, body.force)
    return {"files": files}


@router.delete("/{name}/uploads/{upload_id}")
async def abort_upload(
    name: str, upload_id: str, volumes: Volumes = Depends(volumes_of)
) -> dict[str, str]:
    await volumes.abort_upload(name, upload_id)
    return {"aborted": upload_id}
