"""Schedules fire as ordinary inputs; overlapping runs are skipped and reported."""

from __future__ import annotations

import time
from pathlib import Path

from ember.cli.loader import import_file
from tests.conftest import wait_until
from tests.integration.helpers import cli_json, ember_cli

APP = '''
import time
import ember

app = ember.App("ticker")

@app.function(schedule=ember.Period(seconds=1))
def tick() -> None:
    with open({marker!r}, "a") as f:
        f.write("tick\\n")

@app.function(schedule=ember.Period(seconds=1))
def slow_tick() -> None:
    time.sleep(2.5)

@app.function(schedule=ember.Cron("0 9 * * *", timezone="Europe/Paris"))
def daily() -> None:
    pass
'''


def test_period_schedule_fires_and_overlaps_are_skipped(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ticks.txt"
    source = tmp_path / "ticker.py"
    source.write_text(APP.format(marker=str(marker)))
    import_file(source).app.deploy()

    wait_until(lambda: marker.exists() and marker.read_text().count("tick") >= 2, timeout=60)
    shown = cli_json("app", "show", "ticker", env=server.env())
    next_runs = {f["name"]: f["next_run"] for f in shown["functions"]}
    assert next_runs["tick"] is not None and next_runs["tick"] > time.time() - 5
    # 09:00 in Paris is 07:00 or 08:00 UTC, within the next day.
    assert 0 < next_runs["daily"] - time.time() <= 86_400
    assert time.gmtime(next_runs["daily"]).tm_hour in (7, 8)

    def skip_reported() -> bool:
        logs = ember_cli("app", "logs", "ticker", env=server.env()).stdout
        return "scheduled run skipped: the previous run" in logs

    wait_until(skip_reported, timeout=60, interval=0.5)
