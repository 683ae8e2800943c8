"""Scheduler.tick at given times (it reads no clock): when runs fire, skip and come due again."""

from __future__ import annotations

from datetime import UTC, datetime

from ember import wire
from ember.server.deployments import Deployment
from ember.server.scheduler import Scheduler, next_run

T0 = 1_700_000_000.0
EVERY_MINUTE = wire.ScheduleSpec(kind="period", seconds=60)


class FakeDeployments:
    def __init__(self) -> None:
        self.current: list[Deployment] = []

    def deploy(self, version: int, schedule: wire.ScheduleSpec) -> None:
        spec = wire.FunctionSpec(name="report", schedule=schedule)
        request = wire.DeployRequest(
            app_name="nightly", declared_name="app", module="nightly", functions=[spec]
        )
        self.current = [Deployment("nightly", version, request, None)]

    def all(self) -> list[Deployment]:
        return self.current


class FakeSpawns:
    def __init__(self) -> None:
        self.started: list[str] = []
        self.finished: set[str] = set()

    async def spawn(
        self, app: str, function: str, method: str | None, params: str, payload: bytes
    ) -> str:
        self.started.append(f"fc-{len(self.started) + 1}")
        return self.started[-1]

    def running(self, call_id: str) -> bool:
        return call_id not in self.finished


class FakeLogs:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, app: str, function: str, replica: str, text: str) -> None:
        self.lines.append(text)


def scheduler() -> tuple[Scheduler, FakeDeployments, FakeSpawns, FakeLogs]:
    deployments, spawns, logs = FakeDeployments(), FakeSpawns(), FakeLogs()
    deployments.deploy(1, EVERY_MINUTE)
    return Scheduler(deployments, spawns, logs), deployments, spawns, logs  # type: ignore[arg-type]


async def test_a_period_fires_when_due_and_comes_due_again() -> None:
    sched, _, spawns, logs = scheduler()
    await sched.tick(T0)
    assert sched.next_run_at("nightly", "report") == T0 + 60
    await sched.tick(T0 + 59.9)
    assert spawns.started == []
    await sched.tick(T0 + 60)
    assert spawns.started == ["fc-1"]
    assert logs.lines == ["[ember] scheduled run started: fc-1"]
    assert sched.next_run_at("nightly", "report") == T0 + 120


async def test_a_run_still_going_is_skipped_and_the_skip_is_logged() -> None:
    sched, _, spawns, logs = scheduler()
    await sched.tick(T0)
    await sched.tick(T0 + 60)
    await sched.tick(T0 + 120)  # fc-1 is still running
    assert spawns.started == ["fc-1"]
    assert logs.lines[-1] == "[ember] scheduled run skipped: the previous run (fc-1) is still going"
    spawns.finished.add("fc-1")
    await sched.tick(T0 + 180)
    assert spawns.started == ["fc-1", "fc-2"]


async def test_a_server_that_was_down_fires_once_not_once_per_missed_period() -> None:
    sched, _, spawns, _ = scheduler()
    await sched.tick(T0)
    await sched.tick(T0 + 3600)
    assert spawns.started == ["fc-1"]
    assert sched.next_run_at("nightly", "report") == T0 + 3660


async def test_a_new_version_replaces_the_old_schedule() -> None:
    sched, deployments, _, _ = scheduler()
    await sched.tick(T0)
    deployments.deploy(2, wire.ScheduleSpec(kind="period", seconds=10))
    await sched.tick(T0 + 1)
    assert sched.next_run_at("nightly", "report") == T0 + 11


async def test_cron_follows_the_time_zone_and_its_daylight_saving() -> None:
    daily_nine = wire.ScheduleSpec(kind="cron", cron="0 9 * * *", timezone="Europe/Paris")
    winter = datetime(2024, 1, 15, 10, 0, tzinfo=UTC).timestamp()
    summer = datetime(2024, 7, 15, 10, 0, tzinfo=UTC).timestamp()
    assert next_run(daily_nine, winter) == datetime(2024, 1, 16, 8, 0, tzinfo=UTC).timestamp()
    assert next_run(daily_nine, summer) == datetime(2024, 7, 16, 7, 0, tzinfo=UTC).timestamp()
