"""`ember secret create|list|delete`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.sdk.client import Client
from ember.sdk.secret import parse_dotenv
from ember.sdk.synchronizer import run_sync

cli = typer.Typer(
    help="Manage secrets (environment variables injected into replicas).", no_args_is_help=True
)


@cli.command("create")
@friendly_errors
def create(
    name: str,
    pairs: list[str] = typer.Argument(None, help="KEY=VALUE pairs"),
    from_dotenv: Path = typer.Option(None, "--from-dotenv", help="Read a .env file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing secret."),
) -> None:
    """Create (or with --force replace) a secret; values are encrypted at rest."""
    values = parse_dotenv(from_dotenv.read_text()) if from_dotenv else {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE")
        values[key] = value
    if not values:
        raise typer.BadParameter("give KEY=VALUE pairs or --from-dotenv FILE")
    body = wire.SecretCreate(name=name, values=values, overwrite=force)
    data = run_sync(
        Client.from_settings().json("POST", "/api/v1/secrets", content=body.model_dump_json())
    )
    info = wire.SecretInfo.model_validate(data)
    console.print(f"Secret {info.name}: {', '.join(info.keys)}")
    console.print(f"[dim]Use it with secrets=[ember.Secret.from_name({name!r})][/dim]")


@cli.command("list")
@friendly_errors
def list_secrets(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List secrets and their keys (never their values)."""
    data = run_sync(Client.from_settings().json("GET", "/api/v1/secrets"))
    secrets = [wire.SecretInfo.model_validate(s) for s in data]
    if json:
        print_json(secrets)
        return
    table = Table("name", "keys")
    for secret in secrets:
        table.add_row(secret.name, ", ".join(secret.keys))
    console.print(table)


@cli.command("delete")
@friendly_errors
def delete(name: str) -> None:
    """Delete a secret; replicas started later no longer get it."""
    run_sync(Client.from_settings().request("DELETE", f"/api/v1/secrets/{name}"))
    console.print(f"Deleted {name}")
