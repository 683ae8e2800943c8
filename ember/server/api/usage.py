"""The usage API: metered replica time, GPU time and cost, grouped by app, function or UTC day."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from ember import wire
from ember.server.api.auth import plane_of, require_admin
from ember.server.api.responses import errors
from ember.server.metering.usage import report
from ember.server.metering.windows import day_name, month_start
from ember.server.store.base import Store

SINCE = "Unix time; default: the start of this UTC month"


def require_metering(request: Request) -> None:
    """FastAPI dependency: 409 when the server runs without metering (observability.py)."""
    plane_of(request).observability.require_metering()


router = APIRouter(
    prefix="/api/v1/usage",
    dependencies=[Depends(require_admin), Depends(require_metering)],
    responses=errors(400, 401, 403, 409),
)


@router.get("")
async def usage(
    request: Request,
    since: float | None = Query(None, ge=0, le=1e11, description=SINCE),
    by: wire.UsageGrouping = "app",
) -> wire.UsageReport:
    plane = plane_of(request)
    meter = plane.meter
    await meter.checkpoint()  # what is open is counted up to now
    now = meter.now()
    start = month_start(now) if since is None else since
    segments = await plane.store.run(Store.segments, start)
    inputs = await plane.store.run(Store.input_usage, day_name(start))
    return report(segments, inputs, start, now, by, meter.prices.as_dict())
