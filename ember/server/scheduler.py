"""Scheduler: fire the Cron and Period schedules of deployed functions as ordinary inputs.

Each run is a spawned call (logged, retried, kept like any other); a run that comes due while
the previous one is still going is skipped, and the skip is written to the app's logs.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from ember import wire
from ember.server.calls import SpawnedCalls
from ember.server.deployments import Deployments
from ember.server.logs import LogSink

log = logging.getLogger("ember.scheduler")
NO_ARGUMENTS = pickle.dumps(((), {}))
Key = tuple[str, int, str]  # app, version, function


def next_run(schedule: wire.ScheduleSpec, after: float) -> float:
    """The first time strictly after `after` (a Unix time) at which `schedule` fires."""
    if schedule.kind == "period":
        assert schedule.seconds is not None
        return after + schedule.seconds
    assert schedule.cron is not None
    start = datetime.fromtimestamp(after, ZoneInfo(schedule.timezone))
    return float(croniter(schedule.cron, start).get_next(float))


class Scheduler:
    def __init__(self, deployments: Deployments, spawns: SpawnedCalls, logs: LogSink) -> None:
        self._deployments, self._spawns, self._logs = deployments, spawns, logs
        self._due: dict[Key, float] = {}
        self._last_call: dict[Key, str] = {}

    def next_run_at(self, app: str, function: str) -> float | None:
        return next(
            (due for (a, _, f), due in self._due.items() if a == app and f == function), None
        )

    async def run(self) -> None:
        while True:
            try:
                await self.tick(time.time())
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(0.25)

    async def tick(self, now: float) -> None:
        """Fire what is due; (re)compute due times for the current deployments."""
        live: set[Key] = set()
        for deployment in self._deployments.all():
            for spec in deployment.request.functions:
                if spec.schedule is None:
                    continue
                key = (deployment.app, deployment.version, spec.name)
                live.add(key)
                due = self._due.setdefault(key, next_run(spec.schedule, now))
                if now >= due:
                    await self._fire(key)
                    self._due[key] = next_run(spec.schedule, max(due, now))
        for stale in set(self._due) - live:
            del self._due[stale]

    async def _fire(self, key: Key) -> None:
        app, _, function = key
        previous = self._last_call.get(key)
        if previous is not None and self._spawns.running(previous):
            self._logs.write(
                app,
                function,
                "scheduler",
                f"[ember] scheduled run skipped: the previous run ({previous}) is still going",
            )
            return
        self._last_call[key] = await self._spawns.spawn(app, function, None, "", NO_ARGUMENTS)
        self._logs.write(
            app, function, "scheduler", f"[ember] scheduled run started: {self._last_call[key]}"
        )
