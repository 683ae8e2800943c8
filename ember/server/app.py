"""Build the control plane's ASGI app; its lifespan starts and stops the ControlPlane."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ember.backends.base import Backend
from ember.runtime.volumes import VolumeError
from ember.server.api import (
    apps,
    budgets,
    calls,
    dashboard,
    images,
    keys,
    metrics,
    secrets,
    tokens,
    usage,
    volumes,
)
from ember.server.api.auth import TokenCache
from ember.server.api.docs import add_docs
from ember.server.errors import ApiError
from ember.server.gateway.app import Gateway
from ember.server.plane import ControlPlane
from ember.server.scheduling.admission import Overloaded
from ember.server.settings import ServerSettings
from ember.server.store.base import Store
from ember.server.store.database import DatabaseDown, reason
from ember.server.volumes import as_api_error
from ember.version import __version__

_ERROR_TYPES = {400: "InvalidError", 401: "AuthError", 404: "NotFoundError", 405: "InvalidError"}


def create_app(
    settings: ServerSettings, backend: Backend | None = None, store: Store | None = None
) -> Gateway:
    """The server's ASGI app: the gateway in front, the API (a FastAPI app) behind it.

    The control plane is built here (its store, its backend's GPUs and sandbox), and started and
    stopped by the app's lifespan."""
    plane = ControlPlane(settings, backend, store)
    token_cache = TokenCache()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        try:
            yield
        finally:
            await plane.stop()

    app = FastAPI(
        title="Ember", version=__version__, lifespan=lifespan, docs_url=None, openapi_url=None
    )
    add_docs(app)
    app.state.plane, app.state.tokens = plane, token_cache
    app.add_route(calls.RUN_INPUTS_PATH, calls.run_inputs, methods=["POST"])
    parts = (apps, calls, tokens, keys, secrets, images, volumes, usage, budgets, metrics)
    for module in (*parts, dashboard):
        app.include_router(module.router)

    @app.get("/healthz", openapi_extra={"security": []})
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        error = ApiError(503, "Overloaded", str(exc))
        return JSONResponse(error.body(), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(VolumeError)
    async def volume_error(_: Request, exc: VolumeError) -> JSONResponse:
        error = as_api_error(exc)
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(DatabaseDown)
    async def database_down(_: Request, exc: DatabaseDown) -> JSONResponse:
        message = f"the database is unreachable ({reason(exc)}); deployed apps go on serving"
        error = ApiError(503, "Unavailable", message)
        return JSONResponse(error.body(), status_code=503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own answers (a body that is not JSON, an unknown route) in the API's shape.
        error = ApiError(exc.status_code, _ERROR_TYPES.get(exc.status_code, "Error"), exc.detail)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = ApiError(400, "InvalidError", f"invalid request: {exc.errors()}")
        return JSONResponse(error.body(), status_code=400)

    return Gateway(app, plane, token_cache)
