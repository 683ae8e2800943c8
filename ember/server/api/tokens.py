"""The tokens API: create, list and revoke admin tokens (replica tokens are the server's own)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from ember import wire
from ember.server.api.auth import plane_of, require_admin, revoke
from ember.server.api.responses import checked_name, errors
from ember.server.store.base import Store

router = APIRouter(
    prefix="/api/v1/tokens",
    dependencies=[Depends(require_admin)],
    responses=errors(400, 401, 403, 404),
)


class NewToken(BaseModel):
    name: str = "cli"


@router.post("")
async def create_token(body: NewToken, request: Request) -> wire.TokenCreated:
    name = checked_name("token", body.name)
    return await plane_of(request).store.run(Store.create_token, name, kind="admin")


@router.get("")
async def list_tokens(request: Request) -> list[wire.TokenInfo]:
    return await plane_of(request).store.run(Store.list_tokens, ["admin"])


@router.delete("/{token_id}")
async def revoke_token(token_id: str, request: Request) -> wire.TokenInfo:
    return await revoke(request, "admin", token_id, "token")
