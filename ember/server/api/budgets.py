"""The budgets API: a monthly budget per app and one for the whole server; what is spent."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ember import wire
from ember.server.api.auth import plane_of, require_admin
from ember.server.api.responses import errors
from ember.server.api.usage import require_metering
from ember.server.budgets import SERVER

router = APIRouter(
    prefix="/api/v1",
    dependencies=[Depends(require_admin), Depends(require_metering)],
    responses=errors(400, 401, 403, 404, 409),
)


@router.get("/budgets")
async def list_budgets(request: Request) -> list[wire.BudgetInfo]:
    return plane_of(request).budgets.all()


@router.put("/budgets/server")
async def set_server_budget(body: wire.BudgetSet, request: Request) -> wire.BudgetInfo:
    return await plane_of(request).budgets.set(SERVER, body.monthly_usd)


@router.delete("/budgets/server")
async def remove_server_budget(request: Request) -> dict[str, str]:
    await plane_of(request).budgets.remove(SERVER)
    return {"removed": SERVER}


@router.put("/apps/{name}/budget")
async def set_app_budget(name: str, body: wire.BudgetSet, request: Request) -> wire.BudgetInfo:
    return await plane_of(request).budgets.set(name, body.monthly_usd)


@router.delete("/apps/{name}/budget")
async def remove_app_budget(name: str, request: Request) -> dict[str, str]:
    await plane_of(request).budgets.remove(name)
    return {"removed": name}
