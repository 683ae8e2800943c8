"""Usage reports: stored segments and input totals, clipped to a period and grouped.

Grouped by app, by function, or by UTC day (a segment that spans midnight is split). Input
counts are kept per function and UTC day, so a report starting mid-day counts that day's inputs
whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ember import wire
from ember.server.metering.windows import day_name, day_start

DAY = 86400.0


def report(
    segments: Iterable[dict[str, Any]],
    inputs: Iterable[dict[str, Any]],
    since: float,
    until: float,
    by: wire.UsageGrouping,
    prices: dict[str, object],
) -> wire.UsageReport:
    rows: dict[tuple[str | None, ...], wire.UsageRow] = {}
    total = wire.UsageRow()
    for segment in segments:
        for day, start, end in _days(segment["started_at"], segment["ended_at"], since, until):
            for row in (_row(rows, by, segment["app"], segment["function"], day), total):
                _add_time(row, segment, end - start)
    for entry in inputs:
        for row in (_row(rows, by, entry["app"], entry["function"], entry["day"]), total):
            row.inputs += entry["inputs"]
            row.input_gpu_seconds += entry["gpu_seconds"]
            row.input_gpu_cost_usd += entry["gpu_cost"]
    for row in (*rows.values(), total):
        row.cost_per_input_usd = row.cost_usd / row.inputs if row.inputs else None
    ordered = sorted(rows.values(), key=lambda r: (r.day or "", r.app or "", r.function or ""))
    return wire.UsageReport(
        since=since, until=until, by=by, rows=ordered, total=total, prices=prices
    )


def _row(
    rows: dict[tuple[str | None, ...], wire.UsageRow],
    by: wire.UsageGrouping,
    app: str,
    function: str,
    day: str,
) -> wire.UsageRow:
    fields: dict[str, str] = {"day": day} if by == "day" else {"app": app}
    if by == "function":
        fields["function"] = function
    key = tuple(fields.values())
    if key not in rows:
        rows[key] = wire.UsageRow(**fields)  # type: ignore[arg-type]
    return rows[key]


def _add_time(row: wire.UsageRow, segment: dict[str, Any], seconds: float) -> None:
    state = segment["state"]
    row.replica_seconds += seconds
    row.seconds_by_state[state] = row.seconds_by_state.get(state, 0.0) + seconds
    row.gpu_seconds += seconds * segment["gpus"]
    row.cost_usd += seconds * segment["rate"]


def _days(
    started: float, ended: float, since: float, until: float
) -> Iterator[tuple[str, float, float]]:
    """The parts of [started, ended] inside [since, until], one per UTC day."""
    start, end = max(started, since), min(ended, until)
    while start < end:
        boundary = day_start(start) + DAY
        yield day_name(start), start, min(end, boundary)
        start = boundary
