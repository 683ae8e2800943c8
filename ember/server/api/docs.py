"""The API's own documentation, /openapi.json and /docs, for admin tokens only.

A browser cannot set an Authorization header on a page it opens, so both routes also take the
token as `?token=`; /docs hands it on to the /openapi.json it loads. The page is served with
`Referrer-Policy: no-referrer` and `Cache-Control: no-store`, so the token in its address goes
nowhere else. The schema declares the bearer scheme (Swagger's "Authorize" button uses it) and
drops FastAPI's 422 answers: this API answers 400 for a request it cannot read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from ember.server.api.auth import admin_only, bearer_token, verify

TOKEN_QUERY = "token"


def add_docs(app: FastAPI) -> None:
    """Serve the schema and the docs page on `app` (made with docs_url=openapi_url=None)."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await _admin_token(request)
        return JSONResponse(_schema(app))

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        token = await _admin_token(request)
        page = get_swagger_ui_html(
            openapi_url=f"/openapi.json?{TOKEN_QUERY}={quote(token, safe='')}",
            title=f"{app.title} API",
        )
        page.headers["Referrer-Policy"] = "no-referrer"
        page.headers["Cache-Control"] = "no-store"
        return page


async def _admin_token(request: Request) -> str:
    token = bearer_token(request) or request.query_params.get(TOKEN_QUERY)
    admin_only(request, await verify(request, token))
    assert token is not None  # verify refused a missing one
    return token


def _schema(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"}
        }
        schema["security"] = [{"bearer": []}]
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        app.openapi_schema = schema
    return app.openapi_schema
