"""Authenticate API requests: a bearer token of kind admin (people, CLI) or replica."""

from __future__ import annotations

from fastapi import Request

from ember.server.errors import ApiError
from ember.server.plane import ControlPlane
from ember.server.store.sql import TokenRecord, hash_token

API_TOKEN_KINDS = ("admin", "replica")


class TokenCache:
    """Verified tokens by hash, so the hot call path skips the store; cleared on revoke."""

    def __init__(self) -> None:
        self._valid: dict[str, TokenRecord] = {}

    def verify(self, plane: ControlPlane, token: str) -> TokenRecord | None:
        key = hash_token(token)
        record = self._valid.get(key)
        if record is None:
            record = plane.store.verify_token(token)
            if record is not None:
                self._valid[key] = record
        return record

    def clear(self) -> None:
        self._valid.clear()


def plane_of(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.plane
    return plane


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_token(request: Request) -> TokenRecord:
    """FastAPI dependency: 401 unless the request carries a live API token."""
    token = bearer_token(request)
    if token is None:
        raise ApiError(
            401,
            "AuthError",
            "missing token: send `Authorization: Bearer <token>` "
            "(see `ember token new`, or EMBER_TOKEN)",
        )
    cache: TokenCache = request.app.state.tokens
    record = cache.verify(plane_of(request), token)
    if record is None or record.kind not in API_TOKEN_KINDS:
        raise ApiError(401, "AuthError", "invalid or revoked token")
    return record
