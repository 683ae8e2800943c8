"""`/metrics`: the server's Prometheus metrics, for an admin token (or anyone, with
`ember server --metrics-public`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ember.server.api.auth import admin_only, bearer_token, plane_of, verify
from ember.server.api.responses import errors

router = APIRouter(responses=errors(401, 403))
TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}
}


@router.get("/metrics", response_class=Response, responses=TEXT)
async def metrics(request: Request) -> Response:
    plane = plane_of(request)
    if not plane.settings.metrics_public:
        admin_only(request, await verify(request, bearer_token(request)))
    return Response(plane.metrics.text(), media_type=CONTENT_TYPE_LATEST)
