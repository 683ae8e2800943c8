"""Authenticate API requests and decide what each kind of token may do.

- An admin token (people, the CLI) may do everything.
- A replica token (ember/server/tokens.py: one per app, held by that app's replicas) may call,
  spawn, get and cancel calls of its own app's functions, and use the volumes its app mounts.
  Nothing else: no tokens, keys, secrets, deploys, app stops, image logs, or other apps' data.
- Endpoint keys open web endpoints at the gateway (gateway/auth.py), nothing here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import Request

from ember import wire
from ember.names import shown
from ember.server.errors import ApiError
from ember.server.plane import ControlPlane
from ember.server.store.async_store import AsyncStore
from ember.server.store.base import Store, TokenRecord, hash_token

log = logging.getLogger("ember.server")
API_TOKEN_KINDS = ("admin", "replica")
TOKEN_CACHE_TTL = 2.0  # seconds a verified token is trusted before the store is asked again
REPLICA_REACH = "a replica's token reaches only its own app's functions and calls, and its volumes"


class TokenCache:
    """Verified tokens by hash, so the hot call path skips the store; cleared on revoke here.

    A token seen before is answered from memory, without a wait. Once its entry is older than
    `ttl`, the store is asked again in the background while the cached answer still serves: a
    revocation on another server sharing the database is refused here within about `ttl`
    seconds, and while the database is unreachable the tokens already seen keep working."""

    def __init__(
        self, ttl: float = TOKEN_CACHE_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl, self._clock = ttl, clock
        self._valid: dict[str, tuple[TokenRecord, float]] = {}  # hash -> (record, checked at)
        self._rechecks: dict[str, asyncio.Task[None]] = {}  # hash -> the store being asked

    async def verify(self, plane: ControlPlane, token: str) -> TokenRecord | None:
        key = hash_token(token)
        cached = self._valid.get(key)
        if cached is None:  # first sight: the store answers now
            record = await plane.store.run(Store.verify_token, token)
            if record is not None:
                self._valid[key] = (record, self._clock())
            return record
        record, checked_at = cached
        if self._clock() - checked_at > self._ttl and key not in self._rechecks:
            recheck = self._recheck(plane.store, key, token)
            self._rechecks[key] = asyncio.get_running_loop().create_task(recheck)
        return record

    async def _recheck(self, store: AsyncStore, key: str, token: str) -> None:
        try:
            record = await store.run(Store.verify_token, token)
        except Exception as exc:  # noqa: BLE001 - the database is down: keep serving from memory
            log.warning("could not recheck a token (the cached answer stands): %s", exc)
        else:
            if record is None:
                self._valid.pop(key, None)
            elif key in self._valid:  # not cleared meanwhile
                self._valid[key] = (record, self._clock())
        finally:
            self._rechecks.pop(key, None)

    def clear(self) -> None:
        self._valid.clear()


def plane_of(request: Request) -> ControlPlane:
    plane: ControlPlane = request.app.state.plane
    return plane


def token_cache(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.tokens
    return cache


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_token(request: Request) -> TokenRecord:
    """FastAPI dependency: 401 unless the request carries a live API token (admin or replica)."""
    return await verify(request, bearer_token(request))


async def require_admin(request: Request) -> TokenRecord:
    """FastAPI dependency: as `require_token`, and 403 for a replica's token."""
    return admin_only(request, await require_token(request))


async def verify(request: Request, token: str | None) -> TokenRecord:
    """The live API token's record; 401 for none, an unknown, revoked or endpoint one."""
    if token is None:
        raise ApiError(
            401,
            "AuthError",
            "missing token: send `Authorization: Bearer <token>` "
            "(see `ember token new`, or EMBER_TOKEN)",
        )
    record = await token_cache(request).verify(plane_of(request), token)
    if record is None or record.kind not in API_TOKEN_KINDS:
        raise ApiError(401, "AuthError", "invalid or revoked token")
    return record


def admin_only(request: Request, record: TokenRecord) -> TokenRecord:
    if record.kind != "admin":
        route = getattr(request.scope.get("route"), "path", "this route")
        raise ApiError(
            403, "AuthError", f"{request.method} {route} needs an admin token; {REPLICA_REACH}"
        )
    return record


def require_app(record: TokenRecord, app: str) -> TokenRecord:
    """`record`, the caller; 403 unless it may act on `app`'s functions."""
    if record.kind != "admin" and record.app != app:
        raise ApiError(
            403,
            "AuthError",
            f"this token is the replicas' of app {record.app!r}, not of {app!r}; {REPLICA_REACH}",
        )
    return record


def require_volume(plane: ControlPlane, record: TokenRecord, volume: str) -> None:
    """403 unless `record` may use `volume`: an admin, or a replica of an app that mounts it."""
    if record.kind != "admin" and volume not in mounted_volumes(plane, record.app):
        raise ApiError(
            403,
            "AuthError",
            f"app {record.app!r} does not mount volume {volume!r}; {REPLICA_REACH}",
        )


def sees_call(record: TokenRecord, call_app: str) -> bool:
    """Whether `record` may see a call of `call_app` (others' calls are answered as missing)."""
    return record.kind == "admin" or record.app == call_app


def mounted_volumes(plane: ControlPlane, app: str | None) -> set[str]:
    """The volumes the current version of `app` mounts (none once it is stopped)."""
    try:
        deployment = plane.deployments.current(app or "")
    except ApiError:
        return set()
    return {name for spec in deployment.request.functions for name in spec.volumes.values()}


async def revoke(request: Request, kind: str, token_id: str, noun: str) -> wire.TokenInfo:
    """Revoke the `kind` token `token_id` at once; 404 if there is no such token of that kind."""
    plane = plane_of(request)
    tokens = await plane.store.run(Store.list_tokens, [kind])
    token = next((t for t in tokens if t.id == token_id), None)
    if token is None:
        raise ApiError(
            404, "NotFoundError", f"no {noun} {shown(token_id)}; see `ember {noun} list`"
        )
    await plane.store.run(Store.revoke_token, token_id)
    token_cache(request).clear()
    return token.model_copy(update={"revoked": True})


async def revoke_replica_token(request: Request, app: str) -> None:
    """`app` stopped: its replicas' token stops working at once."""
    await plane_of(request).replica_tokens.revoke(app)
    token_cache(request).clear()
