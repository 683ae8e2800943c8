"""The secrets API: create, list (names and keys only) and delete secrets."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ember import wire
from ember.server.api.auth import plane_of, require_admin
from ember.server.api.responses import checked_name, errors
from ember.server.errors import ApiError
from ember.server.store.base import Store
from ember.spec_checks import SpecError, check_secret

router = APIRouter(
    prefix="/api/v1/secrets",
    dependencies=[Depends(require_admin)],
    responses=errors(400, 401, 403, 404, 409),
)


@router.post("")
async def create_secret(request: Request) -> wire.SecretInfo:
    try:
        body = wire.SecretCreate.model_validate_json(await request.body())
    except ValueError as exc:  # not echoed back: the body holds secret values
        raise ApiError(
            400,
            "InvalidError",
            'malformed secret: expected {"name": ..., "values": {"KEY": "value"}}',
        ) from exc
    try:
        check_secret(body.name, body.values)
    except SpecError as exc:
        raise ApiError(400, "InvalidError", str(exc)) from None
    plane = plane_of(request)
    if await plane.store.run(Store.get_secret, body.name) is not None and not body.overwrite:
        raise ApiError(
            409, "InvalidError", f"secret {body.name!r} exists; pass --force to replace it"
        )
    await plane.put_secret(body.name, body.values)
    secrets = await plane.store.run(Store.list_secrets)
    return next(s for s in secrets if s.name == body.name)


@router.get("")
async def list_secrets(request: Request) -> list[wire.SecretInfo]:
    return await plane_of(request).store.run(Store.list_secrets)


@router.delete("/{name}")
async def delete_secret(name: str, request: Request) -> dict[str, str]:
    if not await plane_of(request).store.run(Store.delete_secret, checked_name("secret", name)):
        raise ApiError(404, "NotFoundError", f"no secret {name!r}; see `ember secret list`")
    return {"deleted": name}
