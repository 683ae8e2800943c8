"""The calls API: `.remote` / `.map` run inputs and answer with outputs; `.spawn` stores them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from ember import wire
from ember.names import shown
from ember.server.api.auth import plane_of, require_app, require_token, sees_call
from ember.server.api.responses import errors
from ember.server.errors import ApiError
from ember.server.store.base import CallRecord, Store, TokenRecord

router = APIRouter(prefix="/api/v1", responses=errors(400, 401, 404))

MAX_GET_WAIT = 55.0


async def _inputs(request: Request) -> list[bytes]:
    try:
        inputs = wire.unpack_frames(await request.body())
    except ValueError as exc:
        raise ApiError(400, "InvalidError", f"malformed input frames: {exc}") from exc
    if not inputs:
        raise ApiError(400, "InvalidError", "no inputs")
    return inputs


def _frames_response(frames: list[bytes]) -> Response:
    return Response(wire.pack_frames(frames), media_type=wire.PICKLE_CONTENT_TYPE)


RUN_INPUTS_PATH = "/api/v1/apps/{app}/functions/{function}/{kind}"


async def run_inputs(request: Request) -> Response:
    """The hot path of every `.remote()`: a plain Starlette endpoint, so no FastAPI dependency
    solving (about 0.3 ms) stands between the call and its replica."""
    app, function, kind = (request.path_params[k] for k in ("app", "function", "kind"))
    principal = require_app(await require_token(request), app)
    method = request.query_params.get("method")
    plane = plane_of(request)
    params = request.headers.get(wire.PARAMS_HEADER, "")
    inputs = await _inputs(request)
    if kind not in ("call", "map", "spawn"):
        raise ApiError(404, "NotFoundError", f"unknown action {kind!r}")
    with plane.metrics.timed(app, function, kind) as timed:
        if kind == "spawn":
            call_id = await plane.spawn(principal, app, function, method, params, inputs[0])
            return Response(
                wire.SpawnResponse(call_id=call_id).model_dump_json(),
                media_type="application/json",
            )
        started = time.time()
        run = plane.call(principal, app, function, method, params, inputs)
        frames = await run if kind == "call" else await _unless_client_leaves(request, run)
        if frames is None:
            timed.status = 499
            return Response(status_code=499)  # nobody is left to read it
    plane.recorder.record(app, function, method, kind, frames, started)
    return _frames_response(frames)


async def _unless_client_leaves(
    request: Request, run: Coroutine[Any, Any, list[bytes]]
) -> list[bytes] | None:
    """Run a `.map` chunk; if the caller hangs up first (it broke out of its loop), stop: the
    chunk's inputs not yet on a replica are not run. None if it was stopped."""
    task = asyncio.ensure_future(run)
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        task.cancel()  # a no-op once it is done
        await asyncio.gather(task, left, return_exceptions=True)
    return None if task.cancelled() else task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _call(request: Request, call_id: str, record: TokenRecord) -> CallRecord:
    """The call, if it exists and `record` may see it (a replica: its own app's)."""
    plane = plane_of(request)
    call = await plane.store.run(Store.get_call, call_id)
    if call is None or not sees_call(record, call.app):
        days = plane.settings.call_retention_days
        raise ApiError(
            404,
            "NotFoundError",
            f"no call {shown(call_id)}: finished calls are kept for {days:g} days "
            "(ember server --call-retention-days)",
        )
    return call


CALL_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The call's output frame (wire.pack_frames)",
        "content": {wire.PICKLE_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    202: {"description": "Still running; ask again", "model": wire.CallStatus},
}


@router.get("/calls/{call_id}", response_class=Response, responses=CALL_ANSWERS)
async def get_call(
    call_id: str,
    request: Request,
    timeout: float = 0.0,
    record: TokenRecord = Depends(require_token),
) -> Response:
    plane = plane_of(request)
    await _call(request, call_id, record)
    call = await plane.spawns.wait(call_id, min(max(timeout, 0.0), MAX_GET_WAIT))
    if call is None or call.result is None:
        return Response(
            wire.CallStatus(call_id=call_id, status="running").model_dump_json(),
            status_code=202,
            media_type="application/json",
        )
    return _frames_response([call.result])


@router.post("/calls/{call_id}/cancel")
async def cancel_call(
    call_id: str, request: Request, record: TokenRecord = Depends(require_token)
) -> wire.CallStatus:
    plane = plane_of(request)
    call = await _call(request, call_id, record)
    if not call.finished:
        await plane.spawns.cancel(call_id)
        return wire.CallStatus(call_id=call_id, status="cancelled")
    return wire.CallStatus(call_id=call_id, status=call.status)
