"""`ember app list|show|stop|logs`."""

from __future__ import annotations

import time
from datetime import datetime

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.cli.times import parse_since
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync

cli = typer.Typer(help="Manage deployed apps.", no_args_is_help=True)


def _get(path: str, **params: object) -> object:
    return run_sync(Client.from_settings().json("GET", path, params=params or None))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@cli.command("list")
@friendly_errors
def list_apps(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List apps with their state and version."""
    apps = [wire.AppInfo.model_validate(a) for a in _get("/api/v1/apps")]  # type: ignore[attr-defined]
    if json:
        print_json(apps)
        return
    table = Table("name", "state", "version", "functions", "replicas", "updated")
    for app in apps:
        replicas = sum(sum(f.replicas.values()) for f in app.functions)
        table.add_row(
            app.name,
            app.state,
            str(app.version),
            str(len(app.functions)),
            str(replicas),
            _when(app.updated_at),
        )
    console.print(table)


@cli.command("show")
@friendly_errors
def show(name: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Show an app's functions and their replicas by state."""
    app = wire.AppInfo.model_validate(_get(f"/api/v1/apps/{name}"))
    if json:
        print_json(app)
        return
    console.print(f"[bold]{app.name}[/bold]  {app.state}  version {app.version}")
    table = Table("function", "kind", "methods", "resources", "replicas", "queued",
                  "endpoint / next run")  # fmt: skip
    for f in app.functions:
        states = ", ".join(f"{n} {s}" for s, n in sorted(f.replicas.items())) or "0"
        extra = f.web_url or (f"next run {_when(f.next_run)}" if f.next_run else "")
        kind = "class" if f.is_class else "function"
        table.add_row(
            f.name, kind, ", ".join(f.methods), f.resources or "", states, str(f.queued), extra
        )
    console.print(table)


@cli.command("stop")
@friendly_errors
def stop(name: str) -> None:
    """Stop an app: its replicas drain and stop; calls to it fail until redeployed."""
    run_sync(Client.from_settings().request("POST", f"/api/v1/apps/{name}/stop"))
    console.print(f"Stopped {name}")


@cli.command("logs")
@friendly_errors
def logs(
    name: str,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines."),
    function: str = typer.Option(None, "--function", help="Only this function's lines."),
    since: str = typer.Option(None, help="From when: an age (10m, 2h) or a time (2026-11-01)."),
    replica: str = typer.Option(None, help="Only this replica's lines (its id, or its start)."),
) -> None:
    """Print an app's logs (replica output and platform events)."""
    after = 0
    filters = {"function": function, "replica": replica,
               "since": parse_since(since) if since else None}  # fmt: skip
    filters = {k: v for k, v in filters.items() if v is not None}
    while True:
        for line in _get(f"/api/v1/apps/{name}/logs", after=after, **filters):  # type: ignore[attr-defined]
            entry = wire.LogLine.model_validate(line)
            after = entry.id
            typer.echo(f"{_when(entry.ts)} {entry.function} {entry.replica} {entry.text}")
        if not follow:
            return
        time.sleep(0.5)
