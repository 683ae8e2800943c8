"""The endpoint keys API: keys that let clients call an app's web endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from ember import wire
from ember.server.api.auth import TokenCache, plane_of, require_token
from ember.server.errors import ApiError

router = APIRouter(prefix="/api/v1/keys", dependencies=[Depends(require_token)])


class NewKey(BaseModel):
    app: str
    name: str = "key"


@router.post("")
async def create_key(body: NewKey, request: Request) -> wire.TokenCreated:
    plane = plane_of(request)
    if plane.store.get_app(body.app) is None:
        raise ApiError(404, "NotFoundError", f"app {body.app!r} not found; deploy it first")
    return plane.store.create_token(body.name, kind="endpoint", app=body.app)


@router.get("")
async def list_keys(request: Request, app: str | None = None) -> list[wire.TokenInfo]:
    keys = plane_of(request).store.list_tokens(kinds=["endpoint"])
    return [k for k in keys if app is None or k.app == app]


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request) -> wire.TokenInfo:
    plane = plane_of(request)
    if not any(k.id == key_id for k in plane.store.list_tokens(["endpoint"])):
        raise ApiError(404, "NotFoundError", f"no key {key_id!r}; see `ember key list`")
    plane.store.revoke_token(key_id)
    cache: TokenCache = request.app.state.tokens
    cache.clear()
    return next(k for k in plane.store.list_tokens(["endpoint"]) if k.id == key_id)
