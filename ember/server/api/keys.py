"""The endpoint keys API: keys that let clients call one app's web endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from ember import wire
from ember.names import shown
from ember.server.api.auth import plane_of, require_admin, revoke
from ember.server.api.responses import checked_name, errors
from ember.server.errors import ApiError
from ember.server.store.base import Store

router = APIRouter(
    prefix="/api/v1/keys",
    dependencies=[Depends(require_admin)],
    responses=errors(400, 401, 403, 404),
)


class NewKey(BaseModel):
    app: str
    name: str = "key"


@router.post("")
async def create_key(body: NewKey, request: Request) -> wire.TokenCreated:
    plane = plane_of(request)
    name = checked_name("key", body.name)
    if await plane.store.run(Store.get_app, body.app) is None:
        raise ApiError(404, "NotFoundError", f"app {shown(body.app)} not found; deploy it first")
    return await plane.store.run(Store.create_token, name, kind="endpoint", app=body.app)


@router.get("")
async def list_keys(request: Request, app: str | None = None) -> list[wire.TokenInfo]:
    keys = await plane_of(request).store.run(Store.list_tokens, ["endpoint"])
    return [k for k in keys if app is None or k.app == app]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request) -> wire.TokenInfo:
    return await revoke(request, "endpoint", key_id, "key")
