"""When the daily digest runs, and which 24 hours it covers.

The policy's ``digest:`` section::

    digest:
      schedule: "0 9 * * *"        # cron (minute hour day month weekday), in the time zone below
      timezone: Europe/Berlin
      working_hours: "08:00-19:00" # optional; approvals outside it (or at weekends) are flagged

A digest covers the 24 hours of elapsed time before it fires, as the issue says. On the days the
clocks change, 24 hours is not "since yesterday's digest": in spring the two windows overlap by an
hour, in autumn an hour falls between them (see ``window_for``). A schedule must fire at least
once a day, or the days between digests would be covered by none.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

DIGEST_WINDOW = timedelta(hours=24)
# The longest gap a once-a-day schedule has: the autumn day whose clock goes back an hour.
MAX_GAP = timedelta(hours=25)
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]|24):([0-5]\d)$", re.ASCII)
# How far ahead a schedule is checked for days it would skip (or this many firings, whichever
# comes first: a schedule firing that often has no day-long gap in that stretch).
_CHECK_SPAN = timedelta(days=366)
_CHECK_FIRINGS = 1000
_CHECK_FROM = datetime(2026, 1, 1, tzinfo=UTC)


class DigestConfig(BaseModel):
    """The policy's ``digest:`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: str = "0 9 * * *"
    timezone: str = "UTC"
    working_hours: str = "08:00-19:00"

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not a time zone name (like Europe/Berlin or UTC)"
            ) from None
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(
                f"{value!r} is not a cron schedule: write five fields, minute hour "
                'day month weekday, like "0 9 * * *"'
            )
        try:
            CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a cron schedule: {exc}") from None
        return value

    @field_validator("working_hours")
    @classmethod
    def _working_hours(cls, value: str) -> str:
        match = _HOURS.fullmatch(value.strip())
        if match is None:
            raise ValueError(f'{value!r} is not a span of hours like "08:00-19:00" (quote it)')
        if match.group(3) == "24" and match.group(4) != "00":
            raise ValueError(f"{value!r}: the day ends at 24:00")
        if match.group(1, 2) >= match.group(3, 4):
            raise ValueError(f"{value!r}: the working day must end after it starts")
        return value.strip()

    @model_validator(mode="after")
    def _daily(self) -> DigestConfig:
        gap = longest_gap(cron_trigger(self))
        if gap > MAX_GAP:
            raise ValueError(
                f"the schedule {self.schedule!r} leaves up to {_hours(gap)} between digests, but "
                "each digest covers only the 24 hours before it: fire at least once a day"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def hours(self) -> tuple[time, time]:
        """Working hours as ``[start, end)`` wall-clock times; ``24:00`` reads as end of day."""
        start, end = self.working_hours.split("-")
        return _clock(start), (time.max if end == "24:00" else _clock(end))


def cron_trigger(config: DigestConfig) -> CronTrigger:
    """The APScheduler trigger firing on ``config.schedule`` in ``config.timezone``."""
    return CronTrigger.from_crontab(config.schedule, timezone=config.zone)


def fire_time_for_run(
    config: DigestConfig, ran_at: datetime, grace: timedelta = timedelta(hours=1)
) -> datetime:
    """The scheduled time a digest job running at ``ran_at`` stands for, in UTC.

    APScheduler does not tell a job when it was due, and a job runs a little late (or much later,
    after downtime). Windows taken from the scheduled time stay aligned day after day: the latest
    firing at most ``grace`` before ``ran_at``; with none (``digest --now``), ``ran_at`` itself.
    """
    if ran_at.tzinfo is None:
        raise ValueError("pass a timezone-aware time")
    trigger = cron_trigger(config)
    latest: datetime | None = None
    moment = ran_at - grace
    while True:
        fire: datetime | None = trigger.get_next_fire_time(None, moment)
        if fire is None or fire > ran_at:
            break
        latest, moment = fire, fire + timedelta(microseconds=1)
    return (latest or ran_at).astimezone(UTC)


def missed_firing(
    config: DigestConfig, now: datetime, grace: timedelta = timedelta(hours=1)
) -> datetime | None:
    """A firing at most ``grace`` before ``now`` that a bot starting at ``now`` may have slept
    through (None when there is none). The timers keep no jobs across restarts, so start-up
    runs the digest once for it; ``DigestRun`` keeps that from posting a window twice."""
    fire = fire_time_for_run(config, now, grace)
    return fire if fire < now.astimezone(UTC) else None


def window_for(fire_time: datetime) -> tuple[datetime, datetime]:
    """The window a digest firing at ``fire_time`` covers: the 24 h of elapsed time before it,
    in UTC, half-open (``[start, end)``)."""
    if fire_time.tzinfo is None:
        raise ValueError("pass a timezone-aware time")
    end = fire_time.astimezone(UTC)
    return end - DIGEST_WINDOW, end


def longest_gap(trigger: CronTrigger) -> timedelta:
    """The longest time between two consecutive firings over the coming year (checked from a
    fixed date, so the answer does not depend on when the policy is loaded)."""
    longest = timedelta(0)
    previous: datetime | None = None
    moment = _CHECK_FROM
    for _ in range(_CHECK_FIRINGS):
        fire: datetime | None = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            return timedelta.max
        # In UTC: between two times in the same zone Python subtracts wall clocks, and the
        # autumn day would look 24 hours long.
        fire = fire.astimezone(UTC)
        if previous is not None:
            longest = max(longest, fire - previous)
        if fire - _CHECK_FROM > _CHECK_SPAN:
            break
        previous, moment = fire, fire + timedelta(microseconds=1)
    return longest


def _clock(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def _hours(gap: timedelta) -> str:
    hours = gap.total_seconds() / 3600
    return f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.0f} hours"
