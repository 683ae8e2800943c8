"""Schedules fire as ordinary spawned inputs of a deployed app (timing rules: test_scheduler)."""

from __future__ import annotations

from pathlib import Path

from ember.cli.loader import import_file
from tests.conftest import wait_until
from tests.integration.helpers import cli_json, ember_cli

APP = """
import ember

app = ember.App("ticker")

@app.function(schedule=ember.Period(seconds=1))
def tick() -> None:
    with open({marker!r}, "a") as f:
        f.write("tick\\n")

@app.function(schedule=ember.Cron("0 9 * * *", timezone="Europe/Paris"))
def daily() -> None:
    pass
"""


def test_a_period_schedule_fires_and_app_show_tells_the_next_runs(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ticks.txt"
    source = tmp_path / "ticker.py"
    source.write_text(APP.format(marker=str(marker)))
    import_file(source).app.deploy()

    wait_until(lambda: marker.exists() and marker.read_text().count("tick") >= 2, timeout=60)
    shown = cli_json("app", "show", "ticker", env=server.env())
    next_runs = {f["name"]: f["next_run"] for f in shown["functions"]}
    assert isinstance(next_runs["tick"], float) and isinstance(next_runs["daily"], float)
    logs = ember_cli("app", "logs", "ticker", env=server.env()).stdout
    assert "[ember] scheduled run started: fc-" in logs
