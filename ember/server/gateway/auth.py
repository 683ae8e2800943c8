"""Authenticate a gateway request first: no valid key, no replica is started or woken."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ember.server.store.base import TokenRecord

Headers = list[tuple[bytes, bytes]]
Verify = Callable[[str], Awaitable[TokenRecord | None]]


class Unauthorized(Exception):
    """401, with a message saying what to send."""


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def credentials(headers: Headers) -> tuple[str | None, str] | None:
    """(key id or None, secret) from `Authorization: Bearer` or Modal's Modal-Key/Modal-Secret."""
    authorization = _header(headers, b"authorization")
    if authorization:
        scheme, _, bearer = authorization.partition(" ")
        if scheme.lower() == "bearer" and bearer.strip():
            return None, bearer.strip()
    key, secret = _header(headers, b"modal-key"), _header(headers, b"modal-secret")
    if key and secret:
        return key, secret
    return None


async def authenticate(headers: Headers, app: str, verify: Verify) -> TokenRecord:
    """The key's record if it is live and may call `app` (an admin token may call any app)."""
    found = credentials(headers)
    if found is None:
        raise Unauthorized(
            "missing key: send `Authorization: Bearer <key>` (create one with "
            f"`ember key create --app {app}`)"
        )
    key_id, secret = found
    record = await verify(secret)
    if record is None or (key_id is not None and key_id != record.id):
        raise Unauthorized("invalid or revoked key")
    if record.kind == "endpoint" and record.app != app:
        raise Unauthorized(f"this key is for app {record.app!r}, not {app!r}")
    if record.kind not in ("endpoint", "admin"):
        raise Unauthorized("invalid or revoked key")
    return record
