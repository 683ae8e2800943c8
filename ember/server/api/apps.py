"""The apps API: deploy, list, show, stop, logs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from ember import wire
from ember.resources import Resources
from ember.server.api.auth import plane_of, require_admin, revoke_replica_token
from ember.server.api.responses import errors
from ember.server.errors import ApiError
from ember.server.gateway.app import endpoint_urls
from ember.server.plane import ControlPlane
from ember.server.pools import PoolKey
from ember.server.store.base import AppRecord, LogFilter, Store

router = APIRouter(
    prefix="/api/v1/apps",
    dependencies=[Depends(require_admin)],
    responses=errors(400, 401, 403, 404),
)
MAX_ID = 2**62  # log line ids fit the store's 64-bit integers


@router.post("")
async def deploy(request: Request) -> wire.DeployResponse:
    try:
        deploy_request = wire.DeployRequest.model_validate_json(await request.body())
    except ValueError as exc:
        raise ApiError(400, "InvalidError", f"malformed deploy request: {exc}") from exc
    plane = plane_of(request)
    deployment = await plane.deploy(deploy_request)
    urls = {
        f.name: endpoint_urls(plane.settings, deployment.app, f.name)[-1]
        for f in deploy_request.functions
        if f.web is not None
    }
    return wire.DeployResponse(
        app_name=deployment.app,
        version=deployment.version,
        functions=[f.name for f in deploy_request.functions],
        urls=urls,
        warnings=deployment.notes,
    )


@router.get("")
async def list_apps(request: Request) -> list[wire.AppInfo]:
    plane = plane_of(request)
    return [await _describe(plane, record) for record in await plane.store.run(Store.list_apps)]


@router.get("/{name}")
async def show_app(name: str, request: Request) -> wire.AppInfo:
    return await app_info(plane_of(request), name)


@router.post("/{name}/stop")
async def stop_app(name: str, request: Request) -> wire.AppInfo:
    plane = plane_of(request)
    await plane.deployments.stop(name)
    await revoke_replica_token(request, name)
    plane.autoscaler.trigger()
    record = await plane.store.run(Store.get_app, name)
    if record is None:  # an ephemeral app is gone once stopped
        return wire.AppInfo(
            name=name, state="stopped", version=0, ephemeral=True, created_at=0, updated_at=0
        )
    return await _describe(plane, record)


@router.get("/{name}/logs")
async def app_logs(
    name: str,
    request: Request,
    after: int = Query(0, ge=0, le=MAX_ID),
    limit: int = Query(1000, ge=1, le=MAX_ID),
    function: str | None = Query(None, max_length=64, description="One function's lines"),
    since: float | None = Query(None, ge=0, le=1e11, description="Lines from this Unix time on"),
    replica: str | None = Query(None, max_length=64, description="A replica id, or its start"),
) -> list[wire.LogLine]:
    plane = plane_of(request)
    if await plane.store.run(Store.get_app, name) is None:
        raise ApiError(404, "NotFoundError", f"app {name!r} not found")
    await plane.sync_logs(name)
    await plane.logs.flush()
    filters = LogFilter(function=function, since=since, replica=replica)
    limit = min(limit, 10_000)
    return await plane.store.run(Store.read_logs, name, after, limit, filters)


async def app_info(plane: ControlPlane, name: str) -> wire.AppInfo:
    record = await plane.store.run(Store.get_app, name)
    if record is None:
        raise ApiError(404, "NotFoundError", f"app {name!r} not found; see `ember app list`")
    return await _describe(plane, record)


async def _describe(plane: ControlPlane, record: AppRecord) -> wire.AppInfo:
    """The app as stored, with what its current version's functions are doing here."""
    name = record.name
    request = await plane.store.run(Store.app_version, name, record.version)
    pools = plane.pools.for_app(name)
    deployment = plane.deployments.find(name)
    functions = []
    for spec in request.functions:
        counts: dict[str, int] = {}
        queued = 0
        for pool in pools:
            if pool.key.function == spec.name:
                queued += pool.queue.waiting
                for state, n in pool.counts().items():
                    counts[state] = counts.get(state, 0) + n
        url = endpoint_urls(plane.settings, name, spec.name)[-1] if spec.web else None
        resources = deployment.resources.get(spec.name) if deployment else None
        functions.append(
            wire.FunctionInfo(
                name=spec.name,
                is_class=spec.is_class,
                methods=spec.methods,
                replicas=counts,
                queued=queued,
                resources=describe_resources(spec, resources) if resources else None,
                snapshot=plane.templates.status(PoolKey(name, record.version, spec.name, "")),
                cold_start=plane.cold_starts.latest.get((name, spec.name)),
                web_url=url,
                next_run=plane.scheduler.next_run_at(name, spec.name),
                image=str(spec.image["hash"]) if spec.image else None,
            )
        )
    return wire.AppInfo(
        name=record.name,
        state=record.state,  # type: ignore[arg-type]
        version=record.version,
        ephemeral=record.ephemeral,
        created_at=record.created_at,
        updated_at=record.updated_at,
        functions=functions,
    )


def describe_resources(spec: wire.FunctionSpec, resources: Resources) -> str:
    """`gpu H100:2, cpu 4, memory 8192 MiB` as asked, `cpu` for a plain function, and a
    GPU request this host runs on the CPU says so."""
    asked = " or ".join([spec.gpu] if isinstance(spec.gpu, str) else spec.gpu or [])
    parts = [f"gpu {asked}" if resources.gpu else f"cpu (no {asked} here)"] if asked else []
    if resources.cpu:
        parts.append(f"cpu {resources.cpu:g}")
    if resources.memory:
        parts.append(f"memory {resources.memory} MiB")
    return ", ".join(parts) or "cpu"
