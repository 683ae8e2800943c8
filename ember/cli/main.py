"""The `ember` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

from ember.cli import (
    apps,
    budget,
    images,
    keys,
    llm,
    run,
    secrets,
    server,
    tokens,
    usage,
    volumes,
)

cli = typer.Typer(
    help="Ember: serverless GPU apps on your own machines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
cli.command("server")(server.server)
cli.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    run.run
)
cli.command("deploy")(run.deploy)
cli.command("serve")(run.serve)
cli.add_typer(apps.cli, name="app")
cli.add_typer(tokens.cli, name="token")
cli.add_typer(keys.cli, name="key")
cli.add_typer(secrets.cli, name="secret")
cli.add_typer(images.cli, name="image")
cli.add_typer(volumes.cli, name="volume")
cli.add_typer(llm.cli, name="llm")
cli.command("usage")(usage.usage)
cli.add_typer(budget.cli, name="budget")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
