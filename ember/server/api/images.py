"""The images API: build logs, for `ember image logs` and the progress of `ember deploy`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from ember.image_spec import ImageSpecError, check_hash
from ember.server.api.auth import plane_of, require_admin
from ember.server.api.responses import errors
from ember.server.errors import ApiError

router = APIRouter(
    prefix="/api/v1/images",
    dependencies=[Depends(require_admin)],
    responses=errors(400, 401, 403, 404),
)


LOG_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The build log from `offset` on",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/{image_hash}/logs", response_class=PlainTextResponse, responses=LOG_TEXT)
async def image_logs(image_hash: str, request: Request, offset: int = 0) -> PlainTextResponse:
    try:
        path = plane_of(request).images.log_path(check_hash(image_hash))
    except ImageSpecError as exc:
        raise ApiError(400, "InvalidError", str(exc)) from None
    if not path.exists():
        raise ApiError(404, "NotFoundError", f"no build log for image {image_hash!r}")
    built = plane_of(request).images.built(image_hash) is not None
    with path.open("rb") as f:
        f.seek(max(0, min(offset, path.stat().st_size)))
        return PlainTextResponse(
            f.read().decode(errors="replace"),
            headers={"X-Ember-Image-Built": "1" if built else "0"},
        )
