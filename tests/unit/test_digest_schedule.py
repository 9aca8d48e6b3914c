"""The digest's schedule: policy validation, 09:00 local on both sides of DST, 24 h windows."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from pydantic import ValidationError

from bot.digest_schedule import (
    DigestConfig,
    cron_trigger,
    fire_time_for_run,
    longest_gap,
    missed_firing,
    window_for,
)

BERLIN_NINE = DigestConfig(schedule="0 9 * * *", timezone="Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def error_of(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        DigestConfig.model_validate(fields)
    return str(caught.value)


# -- the policy section ---------------------------------------------------------------------------


def test_the_issue_example_parses() -> None:
    config = DigestConfig.model_validate({"schedule": "0 9 * * *", "timezone": "Europe/Berlin"})
    assert config.zone.key == "Europe/Berlin"
    assert config.hours == (time(8), time(19))


def test_defaults_are_nine_utc_and_office_hours() -> None:
    config = DigestConfig()
    assert (config.schedule, config.timezone, config.working_hours) == (
        "0 9 * * *",
        "UTC",
        "08:00-19:00",
    )


@pytest.mark.parametrize(
    "schedule", ["0 9 * *", "0 9 * * * *", "@daily", "61 9 * * *", "0 25 * * *", "nonsense"]
)
def test_a_schedule_that_is_not_five_valid_cron_fields_is_refused(schedule: str) -> None:
    assert "is not a cron schedule" in error_of(schedule=schedule)


@pytest.mark.parametrize(
    "schedule", ["0 9 * * 1-5", "0 9 * * 1", "0 9 1 * *", "0 9 */2 * *", "0 9 * 1-6 *"]
)
def test_a_schedule_that_skips_days_is_refused(schedule: str) -> None:
    # Each digest covers only the 24 h before it: a skipped day would be covered by none.
    assert "fire at least once a day" in error_of(schedule=schedule)


@pytest.mark.parametrize("schedule", ["0 9 * * *", "30 7,19 * * *", "0 * * * *", "59 23 * * *"])
def test_schedules_firing_at_least_daily_are_accepted(schedule: str) -> None:
    DigestConfig(schedule=schedule, timezone="Europe/Berlin")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "", "CEST"])
def test_an_unknown_time_zone_is_refused(zone: str) -> None:
    assert "is not a time zone name" in error_of(timezone=zone)


@pytest.mark.parametrize(
    ("hours", "problem"),
    [
        ("19:00-08:00", "must end after it starts"),
        ("08:00-08:00", "must end after it starts"),
        ("8-19", "is not a span of hours"),
        ("08:00-24:30", "the day ends at 24:00"),
        ("08:00-19:60", "is not a span of hours"),
        (1140, "valid string"),  # YAML 1.1 reads an unquoted 19:00 as the number 1140
    ],
)
def test_bad_working_hours_are_refused(hours: Any, problem: str) -> None:
    assert problem in error_of(working_hours=hours)


def test_working_hours_to_midnight() -> None:
    config = DigestConfig(working_hours="00:00-24:00")
    assert config.hours == (time(0), time.max)


def test_unknown_keys_are_refused() -> None:
    assert "Extra inputs are not permitted" in error_of(schedule="0 9 * * *", channel="C0AUDIT")


def test_longest_gap_of_a_daily_schedule_is_the_autumn_day() -> None:
    assert longest_gap(cron_trigger(BERLIN_NINE)) == timedelta(hours=25)
    assert longest_gap(cron_trigger(DigestConfig(schedule="0 9 * * *"))) == timedelta(hours=24)


# -- when it fires --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frozen", "expected"),
    [
        # Summer (CEST, UTC+2): 09:00 in Berlin is 07:00 UTC.
        ("2026-07-14 12:00:00", utc(2026, 7, 15, 7, 0)),
        ("2026-07-14 06:59:59", utc(2026, 7, 14, 7, 0)),
        # Winter (CET, UTC+1): 09:00 in Berlin is 08:00 UTC.
        ("2026-11-03 12:00:00", utc(2026, 11, 4, 8, 0)),
        ("2026-11-03 07:59:59", utc(2026, 11, 3, 8, 0)),
        # The mornings the clocks change: still 09:00 on the Berlin wall clock.
        ("2026-03-28 09:00:00", utc(2026, 3, 29, 7, 0)),  # spring forward, Sun 29 March
        ("2026-10-24 08:00:00", utc(2026, 10, 25, 8, 0)),  # fall back, Sun 25 October
    ],
)
def test_nine_in_berlin_on_both_sides_of_dst(frozen: str, expected: datetime) -> None:
    with freeze_time(frozen):
        from_trigger = cron_trigger(BERLIN_NINE).get_next_fire_time(None, datetime.now(UTC))
    assert from_trigger == expected


# -- which 24 hours it covers ---------------------------------------------------------------------


def test_the_window_is_the_24_hours_before_the_digest() -> None:
    start, end = window_for(utc(2026, 11, 3, 8, 0))
    assert (start, end) == (utc(2026, 11, 2, 8, 0), utc(2026, 11, 3, 8, 0))


def test_the_window_is_in_utc_whatever_zone_the_fire_time_has() -> None:
    fire = datetime(2026, 11, 3, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    start, end = window_for(fire)
    assert end == utc(2026, 11, 3, 8, 0)
    assert end.tzinfo is UTC
    assert end - start == timedelta(hours=24)


def test_window_for_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_for(datetime(2026, 11, 3, 8, 0))


def test_on_dst_days_the_window_is_24_elapsed_hours_not_since_yesterdays_digest() -> None:
    trigger = cron_trigger(BERLIN_NINE)
    # Spring: Saturday's digest fires at 08:00 UTC, Sunday's at 07:00 UTC, 23 h apart, so
    # Sunday's window reaches one hour back into Saturday's.
    saturday = utc(2026, 3, 28, 8, 0)
    sunday = trigger.get_next_fire_time(saturday, saturday + timedelta(microseconds=1))
    assert sunday == utc(2026, 3, 29, 7, 0)
    start, end = window_for(sunday)
    assert end - start == timedelta(hours=24)
    assert start == saturday - timedelta(hours=1)
    # Autumn: 07:00 UTC, then 08:00 UTC, 25 h apart: the hour after Saturday's digest falls
    # in neither window.
    saturday = utc(2026, 10, 24, 7, 0)
    sunday = trigger.get_next_fire_time(saturday, saturday + timedelta(microseconds=1))
    assert sunday == utc(2026, 10, 25, 8, 0)
    start, end = window_for(sunday)
    assert end - start == timedelta(hours=24)
    assert start == saturday + timedelta(hours=1)


# -- the scheduled time a late-running job stands for ---------------------------------------------


@pytest.mark.parametrize(
    ("ran_at", "stands_for"),
    [
        (utc(2026, 11, 3, 8, 0), utc(2026, 11, 3, 8, 0)),  # on time
        (utc(2026, 11, 3, 8, 7), utc(2026, 11, 3, 8, 0)),  # a few minutes late
        (utc(2026, 7, 15, 7, 59), utc(2026, 7, 15, 7, 0)),  # nearly an hour late, in summer
        (utc(2026, 11, 3, 12, 0), utc(2026, 11, 3, 12, 0)),  # no firing near: digest --now
    ],
)
def test_a_late_job_keeps_the_window_of_its_scheduled_time(
    ran_at: datetime, stands_for: datetime
) -> None:
    assert fire_time_for_run(BERLIN_NINE, ran_at) == stands_for


@pytest.mark.parametrize(
    ("started_at", "missed"),
    [
        (utc(2026, 11, 3, 8, 20), utc(2026, 11, 3, 8, 0)),  # down across 09:00 Berlin
        (utc(2026, 11, 3, 8, 59), utc(2026, 11, 3, 8, 0)),  # nearly an hour late: still posted
        (utc(2026, 11, 3, 9, 1), None),  # over an hour late: skipped, as the old job skipped it
        (utc(2026, 11, 3, 8, 0), None),  # on the dot: the cron job fires anyway
        (utc(2026, 11, 3, 12, 0), None),  # no firing near
    ],
)
def test_a_bot_starting_after_a_firing_catches_it_up(
    started_at: datetime, missed: datetime | None
) -> None:
    """The timers keep no jobs across restarts (they live in memory), so start-up must post a
    digest whose firing fell while every replica was down, as the persisted job used to."""
    assert missed_firing(BERLIN_NINE, started_at) == missed


def test_a_frequent_schedule_stands_for_its_latest_firing() -> None:
    hourly = DigestConfig(schedule="15 * * * *")
    assert fire_time_for_run(hourly, utc(2026, 11, 3, 10, 20)) == utc(2026, 11, 3, 10, 15)


def test_digest_now_under_a_frozen_clock() -> None:
    with freeze_time("2026-11-03 12:34:56"):
        now = datetime.now(UTC)
        assert window_for(fire_time_for_run(BERLIN_NINE, now)) == (now - timedelta(hours=24), now)
