"""`ember key create|list|revoke`: keys for calling an app's web endpoints."""

from __future__ import annotations

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync

cli = typer.Typer(
    help="Manage endpoint keys (for web endpoints with requires_proxy_auth).", no_args_is_help=True
)


def create_key(app: str, name: str = "key") -> wire.TokenCreated:
    data = run_sync(
        Client.from_settings().json("POST", "/api/v1/keys", json={"app": app, "name": name})
    )
    return wire.TokenCreated.model_validate(data)


@cli.command("create")
@friendly_errors
def create(
    app: str = typer.Option(..., "--app", help="The app whose endpoints the key opens."),
    name: str = typer.Option("key", help="A name to recognise the key by."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a key; send it as `Authorization: Bearer <key>` (shown once)."""
    key = create_key(app, name)
    if json:
        print_json(key)
        return
    console.print(f"Key {key.id} for app {app}:")
    typer.echo(key.token)
    console.print(
        "[dim]Send it as `Authorization: Bearer <key>`, or as Modal-Key: "
        f"{key.id} with Modal-Secret: <key>. It is not shown again.[/dim]"
    )


@cli.command("list")
@friendly_errors
def list_keys(
    app: str = typer.Option(None, "--app", help="Only this app's keys."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List endpoint keys (never their values)."""
    data = run_sync(
        Client.from_settings().json("GET", "/api/v1/keys", params={"app": app} if app else None)
    )
    keys = [wire.TokenInfo.model_validate(k) for k in data]
    if json:
        print_json(keys)
        return
    table = Table("id", "app", "name", "revoked")
    for k in keys:
        table.add_row(k.id, k.app or "", k.name, "yes" if k.revoked else "")
    console.print(table)


@cli.command("revoke")
@friendly_errors
def revoke(key_id: str) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    run_sync(Client.from_settings().request("DELETE", f"/api/v1/keys/{key_id}"))
    console.print(f"Revoked {key_id}")
