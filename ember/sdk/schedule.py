"""Schedules for deployed functions: `ember.Cron` and `ember.Period`."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ember import wire
from ember.sdk.exceptions import InvalidError


class Schedule:
    def to_spec(self) -> wire.ScheduleSpec:
        raise NotImplementedError


class Cron(Schedule):
    """Run on a cron expression, e.g. `ember.Cron("0 9 * * 1-5", timezone="Europe/Paris")`."""

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        from croniter import croniter  # here: replicas import the SDK and rarely a schedule

        if not croniter.is_valid(cron_string):
            raise InvalidError(
                f"malformed cron expression {cron_string!r}: expected five fields "
                "'minute hour day-of-month month day-of-week', e.g. '0 9 * * *'"
            )
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise InvalidError(
                f"unknown timezone {timezone!r} for Cron; use an IANA name "
                "such as 'UTC' or 'America/New_York'"
            ) from exc
        self.cron_string, self.timezone = cron_string, timezone

    def to_spec(self) -> wire.ScheduleSpec:
        return wire.ScheduleSpec(kind="cron", cron=self.cron_string, timezone=self.timezone)


class Period(Schedule):
    """Run every fixed interval, e.g. `ember.Period(minutes=5)`."""

    def __init__(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> None:
        self.seconds = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        if self.seconds <= 0:
            raise InvalidError("ember.Period needs a positive interval, e.g. Period(minutes=5)")

    def to_spec(self) -> wire.ScheduleSpec:
        return wire.ScheduleSpec(kind="period", seconds=self.seconds)
