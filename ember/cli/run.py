"""`ember run`, `ember deploy`, `ember serve`: put an app file on the server."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import typer

from ember import wire
from ember.cli.follow import BuildFollower, LogFollower
from ember.cli.loader import load_app, parse_ref
from ember.cli.output import console, err, friendly_errors
from ember.cli.server import embedded_server, server_reachable, use_server
from ember.sdk.app import App
from ember.sdk.client import Client
from ember.sdk.cls import Cls
from ember.sdk.config import ClientSettings
from ember.sdk.function import Function
from ember.sdk.synchronizer import run_sync


@contextlib.contextmanager
def a_server() -> Iterator[None]:
    """The configured server if it answers; otherwise an embedded one for this command."""
    settings = ClientSettings.load()
    if server_reachable(settings):
        yield
        return
    if settings.configured:
        err.print(
            f"[yellow]No server answers at {settings.server_url}; starting an embedded "
            "one for this run.[/yellow]"
        )
    with embedded_server(settings.home) as embedded, use_server(embedded):
        yield


def _parse_cli_args(f: Callable[..., Any], args: list[str]) -> dict[str, Any]:
    """`--name value` pairs, converted to the annotated types of `f`'s parameters."""
    signature = inspect.signature(f)
    kwargs: dict[str, Any] = {}
    it = iter(args)
    for token in it:
        if not token.startswith("--"):
            raise typer.BadParameter(f"unexpected argument {token!r}; pass --name value")
        name = token[2:].replace("-", "_")
        if name not in signature.parameters:
            valid = ", ".join(f"--{p}" for p in signature.parameters) or "none"
            raise typer.BadParameter(f"unknown option --{name}; options: {valid}")
        annotation = signature.parameters[name].annotation
        raw = next(it, None)
        if raw is None:
            raise typer.BadParameter(f"--{name} needs a value")
        kwargs[name] = _convert(raw, annotation)
    return kwargs


def _convert(raw: str, annotation: Any) -> Any:
    kind = (
        annotation
        if isinstance(annotation, type)
        else {"int": int, "float": float, "bool": bool}.get(str(annotation), str)
    )
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "y")
    return kind(raw) if kind in (int, float) else raw


def run(
    ref: str = typer.Argument(..., help="app.py or app.py::name"),
    args: list[str] = typer.Argument(None, help="--name value arguments"),
) -> None:
    """Run an app ephemerally: its local entrypoint, or the named function."""
    target = parse_ref(ref)
    app = load_app(target)
    with a_server():
        _run_app(app, target.object_name, args or [])


@friendly_errors
def _run_app(app: App, object_name: str | None, args: list[str]) -> None:
    entry = _pick_entry(app, object_name)
    console.print(f"[dim]Running {app.name} (ephemeral)[/dim]")
    with BuildFollower(app), app.run(), LogFollower(app.deployed_name or app.name):
        if isinstance(entry, Function):
            result = entry.remote(**_parse_cli_args(entry.get_raw_f(), args))
            console.print(result)
        else:
            entry(**_parse_cli_args(entry, args))


def _pick_entry(app: App, name: str | None) -> Any:
    entrypoints: dict[str, Any] = dict(app.local_entrypoints)
    functions = {n: f for n, f in app.registered_functions.items() if isinstance(f, Function)}
    choices = {**functions, **entrypoints}
    if name is not None:
        if name not in choices:
            kinds = [n for n, v in app.registered_functions.items() if isinstance(v, Cls)]
            hint = (
                f" ({name} is a class: call its methods from a local entrypoint)"
                if name in kinds
                else ""
            )
            raise typer.BadParameter(
                f"{name!r} is not a function or local entrypoint of "
                f"{app.name}{hint}; choose from {', '.join(choices)}"
            )
        return choices[name]
    if len(entrypoints) == 1:
        return next(iter(entrypoints.values()))
    if len(functions) == 1 and not entrypoints:
        return next(iter(functions.values()))
    raise typer.BadParameter(
        f"say which to run: app.py::NAME with NAME one of {', '.join(choices) or '(none defined)'}"
    )


def deploy(
    ref: str = typer.Argument(..., help="app.py"),
    name: str = typer.Option(None, help="Deploy under this name instead of the app's."),
) -> None:
    """Deploy an app (a new version if it exists); it keeps running after this returns."""
    app = load_app(parse_ref(ref))
    _deploy(app, name)


@friendly_errors
def _deploy(app: App, name: str | None) -> wire.DeployResponse:
    with BuildFollower(app), console.status(f"Deploying {name or app.name}..."):
        response = app.deploy(name)
    console.print(
        f"[green]✓[/green] Deployed [bold]{response.app_name}[/bold] "
        f"version {response.version}: {', '.join(response.functions)}"
    )
    for function, url in response.urls.items():
        console.print(f"  {function}: [link={url}]{url}[/link]", highlight=False)
    return response


def serve(
    ref: str = typer.Argument(..., help="app.py"),
    interval: float = typer.Option(0.5, help="Seconds between checks for changes."),
) -> None:
    """Deploy an app and redeploy it whenever its file changes; Ctrl-C stops it."""
    target = parse_ref(ref)
    app = load_app(target)
    _deploy(app, None)
    mtime = target.path.stat().st_mtime
    console.print(f"Watching {target.path} for changes (Ctrl-C to stop)")
    try:
        with LogFollower(app.name):
            while True:
                time.sleep(interval)
                current = target.path.stat().st_mtime
                if current != mtime:
                    mtime = current
                    console.print("[cyan]Change detected; redeploying[/cyan]")
                    with contextlib.suppress(typer.Exit):
                        app = load_app(target)
                        _deploy(app, None)
    except KeyboardInterrupt:
        console.print(f"Stopping {app.name}")
        run_sync(Client.from_settings().request("POST", f"/api/v1/apps/{app.name}/stop"))
