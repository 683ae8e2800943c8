"""The API's error answers: the ones its routes document (so its OpenAPI says what it really
answers), and the 400 for a name that breaks ember/names.py's rule."""

from __future__ import annotations

from typing import Any

from ember import wire
from ember.names import InvalidName, check_name
from ember.server.errors import ApiError

_MEANING = {
    400: "Invalid request; the message says what to change",
    401: "Missing, invalid or revoked token",
    403: "The token may not do this (a replica's token outside its own app)",
    404: "No such resource",
    409: "It exists already, or it needs metering and the server runs without it",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status with the JSON error body it carries
    (JSON even where the route's own answer is not, as for build logs)."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {
        code: {"model": wire.ErrorBody, "description": _MEANING[code], "content": body}
        for code in codes
    }


def checked_name(kind: str, name: str) -> str:
    """`name` if it follows the name rule; otherwise a 400 that states the rule."""
    try:
        return check_name(kind, name)
    except InvalidName as exc:
        raise ApiError(400, "InvalidError", str(exc)) from None
