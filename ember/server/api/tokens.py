"""The tokens API: create, list and revoke API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from ember import wire
from ember.server.api.auth import API_TOKEN_KINDS, TokenCache, plane_of, require_token
from ember.server.errors import ApiError

router = APIRouter(prefix="/api/v1/tokens", dependencies=[Depends(require_token)])


class NewToken(BaseModel):
    name: str = "cli"


@router.post("")
async def create_token(body: NewToken, request: Request) -> wire.TokenCreated:
    return plane_of(request).store.create_token(body.name, kind="admin")


@router.get("")
async def list_tokens(request: Request) -> list[wire.TokenInfo]:
    return plane_of(request).store.list_tokens(kinds=[k for k in API_TOKEN_KINDS if k != "replica"])


@router.delete("/{token_id}")
async def revoke_token(token_id: str, request: Request) -> wire.TokenInfo:
    plane = plane_of(request)
    if not plane.store.revoke_token(token_id):
        raise ApiError(404, "NotFoundError", f"no token {token_id!r}; see `ember token list`")
    cache: TokenCache = request.app.state.tokens
    cache.clear()
    return next(t for t in plane.store.list_tokens(["admin", "endpoint"]) if t.id == token_id)
