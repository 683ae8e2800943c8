"""The volumes API: create, list, delete; list, download, remove and upload files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from ember import wire
from ember.server.api.auth import plane_of, require_token
from ember.server.volumes import CHUNK

router = APIRouter(prefix="/api/v1/volumes", dependencies=[Depends(require_token)])


@router.post("")
async def create_volume(body: wire.VolumeCreate, request: Request) -> wire.VolumeInfo:
    return plane_of(request).volumes.create(body.name, exist_ok=body.exist_ok)


@router.get("")
async def list_volumes(request: Request) -> list[wire.VolumeInfo]:
    return plane_of(request).volumes.all()


@router.get("/{name}")
async def show_volume(name: str, request: Request) -> wire.VolumeInfo:
    return plane_of(request).volumes.info(name)


@router.delete("/{name}")
async def delete_volume(name: str, request: Request) -> dict[str, str]:
    await plane_of(request).volumes.delete(name)
    return {"deleted": name}


@router.get("/{name}/entries")
async def list_entries(
    name: str, request: Request, path: str = "/", recursive: bool = False
) -> list[wire.FileEntry]:
    return await plane_of(request).volumes.entries(name, path, recursive)


@router.get("/{name}/files")
async def read_file(name: str, path: str, request: Request) -> StreamingResponse:
    f, size = await plane_of(request).volumes.open_file(name, path)
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
    name: str, path: str, request: Request, recursive: bool = False
) -> dict[str, str]:
    await plane_of(request).volumes.remove(name, path, recursive)
    return {"removed": path}


@router.post("/{name}/uploads")
async def start_upload(name: str, body: wire.UploadStart, request: Request) -> wire.UploadStarted:
    upload_id = plane_of(request).volumes.start_upload(name, body.paths, body.force)
    return wire.UploadStarted(upload_id=upload_id)


@router.put("/{name}/uploads/{upload_id}/files")
async def upload_file(name: str, upload_id: str, path: str, request: Request) -> dict[str, object]:
    size = await plane_of(request).volumes.receive(name, upload_id, path, request.stream())
    return {"path": path, "size": size}


@router.post("/{name}/uploads/{upload_id}/commit")
async def commit_upload(
    name: str, upload_id: str, body: wire.UploadCommit, request: Request
) -> dict[str, int]:
    files = await plane_of(request).volumes.finish_upload(name, upload_id, body.force)
    return {"files": files}


@router.delete("/{name}/uploads/{upload_id}")
async def abort_upload(name: str, upload_id: str, request: Request) -> dict[str, str]:
    await plane_of(request).volumes.abort_upload(name, upload_id)
    return {"aborted": upload_id}
