"""The images API: build logs, for `ember image logs` and the progress of `ember deploy`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from ember.server.api.auth import plane_of, require_token
from ember.server.errors import ApiError

router = APIRouter(prefix="/api/v1/images", dependencies=[Depends(require_token)])


@router.get("/{image_hash}/logs")
async def image_logs(image_hash: str, request: Request, offset: int = 0) -> PlainTextResponse:
    path = plane_of(request).images.log_path(image_hash)
    if not image_hash.isalnum() or not path.exists():
        raise ApiError(404, "NotFoundError", f"no build log for image {image_hash!r}")
    built = plane_of(request).images.built(image_hash) is not None
    with path.open("rb") as f:
        f.seek(max(offset, 0))
        return PlainTextResponse(
            f.read().decode(errors="replace"),
            headers={"X-Ember-Image-Built": "1" if built else "0"},
        )
