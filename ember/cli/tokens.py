"""`ember token new|list|revoke`."""

from __future__ import annotations

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync

cli = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


@cli.command("new")
@friendly_errors
def new(
    name: str = typer.Option("cli", help="A name to recognise the token by."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create an API token; it is shown once."""
    data = run_sync(Client.from_settings().json("POST", "/api/v1/tokens", json={"name": name}))
    token = wire.TokenCreated.model_validate(data)
    if json:
        print_json(token)
        return
    console.print(f"Token {token.id} ({token.name}):")
    typer.echo(token.token)
    console.print("[dim]Store it now; it is not shown again. Use it as EMBER_TOKEN.[/dim]")


@cli.command("list")
@friendly_errors
def list_tokens(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List API tokens (never their values)."""
    data = run_sync(Client.from_settings().json("GET", "/api/v1/tokens"))
    tokens = [wire.TokenInfo.model_validate(t) for t in data]
    if json:
        print_json(tokens)
        return
    table = Table("id", "name", "kind", "revoked")
    for t in tokens:
        table.add_row(t.id, t.name, t.kind, "yes" if t.revoked else "")
    console.print(table)


@cli.command("revoke")
@friendly_errors
def revoke(token_id: str) -> None:
    """Revoke a token; requests with it get 401 from now on."""
    run_sync(Client.from_settings().request("DELETE", f"/api/v1/tokens/{token_id}"))
    console.print(f"Revoked {token_id}")
