"""Shared CLI output: consoles, JSON for scripts, errors that end the command."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console

from ember.sdk.exceptions import Error

console = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    typer.echo(json.dumps(value, indent=2))


def friendly_errors(f: F) -> F:
    """Print Ember errors as one red line and exit 1, instead of a traceback."""

    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except Error as exc:
            err.print(f"[red]{type(exc).__name__}: {exc}[/red]", highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
