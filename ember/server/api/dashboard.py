"""The dashboard: its page, its login (a session cookie, HttpOnly and SameSite=Strict), and the
one JSON document it reads.

The page and its scripts hold no data and need no login; `/dashboard/api/overview` needs a
session or an admin token: endpoint keys and replica tokens are refused. Sessions live in the
server's memory (a restart logs everyone out) and end with their token's revocation.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from ember.server.api.auth import bearer_token, plane_of, token_cache
from ember.server.api.responses import errors
from ember.server.dashboard.overview import overview
from ember.server.errors import ApiError
from ember.server.store.base import TokenRecord

ASSETS = Path(__file__).resolve().parent.parent / "dashboard"
STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}
COOKIE = "ember_dashboard"
SESSION_SECONDS = 12 * 3600
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/dashboard", responses=errors(401), include_in_schema=False)


class Login(BaseModel):
    token: str


@dataclass
class Session:
    token: str
    expires: float


class Sessions:
    """Session id -> the admin token it was opened with, for `SESSION_SECONDS`."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def open(self, token: str) -> str:
        now = time.monotonic()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(token, now + SESSION_SECONDS)
        return session_id

    def token(self, session_id: str | None) -> str | None:
        session = self._sessions.get(session_id or "")
        return session.token if session and session.expires > time.monotonic() else None

    def close(self, session_id: str | None) -> None:
        self._sessions.pop(session_id or "", None)


SESSIONS = Sessions()


async def _admin(request: Request, token: str | None) -> TokenRecord:
    """The admin token's record; 401 for anything else (endpoint keys, replica tokens)."""
    record = await token_cache(request).verify(plane_of(request), token) if token else None
    if record is None or record.kind != "admin":
        raise ApiError(
            401, "AuthError", "the dashboard needs an admin token (`ember token new`); log in"
        )
    return record


@router.get("")
async def page() -> Response:
    return FileResponse(ASSETS / "page.html", media_type="text/html", headers=HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise ApiError(404, "NotFoundError", f"no dashboard file {name[:64]!r}")
    folder = ASSETS / "vendor" if name.startswith("uPlot") else ASSETS
    return FileResponse(folder / name, media_type=STATIC[name], headers=HEADERS)


@router.post("/login")
async def login(body: Login, request: Request) -> Response:
    await _admin(request, body.token)
    response = JSONResponse({"ok": True}, headers=HEADERS)
    response.set_cookie(
        COOKIE, SESSIONS.open(body.token), max_age=SESSION_SECONDS, path="/dashboard",
        httponly=True, samesite="strict", secure=plane_of(request).settings.tls,
    )  # fmt: skip
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    SESSIONS.close(request.cookies.get(COOKIE))
    response = JSONResponse({"ok": True}, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@router.get("/api/overview")
async def overview_document(request: Request) -> Response:
    token = SESSIONS.token(request.cookies.get(COOKIE)) or bearer_token(request)
    await _admin(request, token)
    return JSONResponse(await overview(plane_of(request)), headers=HEADERS)
