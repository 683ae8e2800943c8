"""`ember usage`: metered replica time, GPU time and cost, by app, function or UTC day."""

from __future__ import annotations

from typing import Literal

import typer
from rich.table import Table

from ember import wire
from ember.cli.output import console, friendly_errors, print_json
from ember.cli.times import parse_since
from ember.sdk.client import Client
from ember.sdk.synchronizer import run_sync


@friendly_errors
def usage(
    since: str = typer.Option(
        None, help="From when: an age (7d, 12h) or a date (2026-11-01). Default: this UTC month."
    ),
    by: str = typer.Option("app", help="Group by app, function or day (UTC)."),
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what replicas cost: time in each state, GPU time, cost, inputs and cost per input."""
    if by not in ("app", "function", "day"):
        raise typer.BadParameter(f"--by takes app, function or day, not {by!r}")
    params: dict[str, object] = {"by": by}
    if since is not None:
        params["since"] = parse_since(since)
    data = run_sync(Client.from_settings().json("GET", "/api/v1/usage", params=params))
    report = wire.UsageReport.model_validate(data)
    if json:
        print_json(report)
        return
    console.print(table(report, by))  # type: ignore[arg-type]


def table(report: wire.UsageReport, by: Literal["app", "function", "day"]) -> Table:
    keys = {"app": ["app"], "function": ["app", "function"], "day": ["day"]}[by]
    out = Table(*keys, "replica s", "GPU s", "cost (USD)", "inputs", "per input (USD)")
    for row in [*report.rows, report.total]:
        total = row is report.total
        names = ["[bold]total[/bold]" if total and i == 0 else "" for i in range(len(keys))]
        if not total:
            names = [str(getattr(row, key) or "") for key in keys]
        per_input = f"{row.cost_per_input_usd:.6f}" if row.cost_per_input_usd is not None else ""
        out.add_row(*names, f"{row.replica_seconds:.1f}", f"{row.gpu_seconds:.1f}",
                    f"{row.cost_usd:.6f}", str(row.inputs), per_input)  # fmt: skip
    return out
