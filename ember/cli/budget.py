"""`ember budget set|list|remove`: monthly budgets per app and for the whole server."""

from __future__ import annotations

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync
from ember.server.budgets import usd

cli = typer.Typer(
    help="Monthly budgets (USD, UTC months): at 80 % a warning; at 100 % no new replicas.",
    no_args_is_help=True,
)


def _path(app: str | None, server: bool) -> str:
    if server == (app is not None):
        raise typer.BadParameter("name an app, or give --server for the server's budget")
    return "/api/v1/budgets/server" if server else f"/api/v1/apps/{app}/budget"


@cli.command("set")
@friendly_errors
def set_budget(
    app: str = typer.Argument(None, help="The app (or --server)."),
    monthly: float = typer.Option(..., "--monthly", help="USD per UTC month."),
    server: bool = typer.Option(False, "--server", help="The budget of the whole server."),
) -> None:
    """Set a monthly budget; past it, inputs that need a new replica get 402."""
    body = wire.BudgetSet(monthly_usd=monthly).model_dump()
    data = run_sync(Client.from_settings().json("PUT", _path(app, server), json=body))
    info = wire.BudgetInfo.model_validate(data)
    console.print(f"{_name(info.scope)}: {usd(info.monthly_usd)} a month "
                  f"({usd(info.spent_usd)} spent this month, {info.state})")  # fmt: skip


@cli.command("list")
@friendly_errors
def list_budgets(json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Budgets, and what was spent against each this UTC month."""
    data = run_sync(Client.from_settings().json("GET", "/api/v1/budgets"))
    budgets = [wire.BudgetInfo.model_validate(b) for b in data]
    if json:
        print_json(budgets)
        return
    table = Table("budget", "monthly", "spent this month", "state")
    for info in budgets:
        table.add_row(_name(info.scope), usd(info.monthly_usd), usd(info.spent_usd), info.state)
    console.print(table)


@cli.command("remove")
@friendly_errors
def remove(
    app: str = typer.Argument(None, help="The app (or --server)."),
    server: bool = typer.Option(False, "--server", help="The budget of the whole server."),
) -> None:
    """Remove a budget: the app scales up again whatever it costs."""
    run_sync(Client.from_settings().request("DELETE", _path(app, server)))
    console.print(f"Removed the budget of {_name('*' if server else app or '')}")


def _name(scope: str) -> str:
    return "the server" if scope == "*" else scope
