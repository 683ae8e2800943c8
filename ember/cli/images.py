"""`ember image logs`."""

from __future__ import annotations

import typer

from ember.cli.output import friendly_errors
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync

cli = typer.Typer(help="Inspect image builds.", no_args_is_help=True)


@cli.command("logs")
@friendly_errors
def logs(image_hash: str) -> None:
    """Print the build log of an image (its hash is in `ember app show --json`)."""
    response = run_sync(Client.from_settings().request("GET", f"/api/v1/images/{image_hash}/logs"))
    typer.echo(response.text, nl=False)
