"""Static rotations: who is on call at any instant, across handoffs, DST changes and overrides;
and the ``rotations:`` policy section that describes them."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from bot.domain.rotations import Override, RotationError, ShiftLength, StaticRotation
from bot.oncall.config import (
    PagerDutyRotationConfig,
    RotationConfig,
    StaticRotationConfig,
    UsergroupRotationConfig,
    check_approver_entry,
    check_rotation_names,
    undefined_rotations,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
A, B, C, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"


def rotation(
    shift: ShiftLength = "weekly",
    *,
    timezone: str = "Europe/Berlin",
    start: date = date(2026, 1, 5),
    handoff: time = time(9, 0),
    members: tuple[str, ...] = (A, B, C),
    overrides: tuple[Override, ...] = (),
) -> StaticRotation:
    return StaticRotation(
        name="payments-primary",
        timezone=timezone,
        start=start,
        shift=shift,
        handoff=handoff,
        members=members,
        overrides=overrides,
    )


def local(
    zone: ZoneInfo,
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    *,
    fold: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---------------------------------------------------------------- weekly and daily handoffs


def test_weekly_members_take_turns_from_the_start_day_at_the_handoff_time() -> None:
    r = rotation()
    assert r.on_call_at(local(BERLIN, 2026, 1, 5, 9, 0)) == A
    assert r.on_call_at(local(BERLIN, 2026, 1, 9, 23, 0)) == A
    assert r.on_call_at(local(BERLIN, 2026, 1, 12, 9, 0)) == B
    assert r.on_call_at(local(BERLIN, 2026, 1, 19, 9, 0)) == C
    assert r.on_call_at(local(BERLIN, 2026, 1, 26, 9, 0)) == A  # wraps around


@pytest.mark.parametrize("shift", ["weekly", "daily"])
def test_the_new_member_owns_the_exact_handoff_minute(shift: ShiftLength) -> None:
    r = rotation(shift)
    handoff_day = date(2026, 1, 12) if shift == "weekly" else date(2026, 1, 6)
    before = datetime.combine(handoff_day, time(8, 59), BERLIN)
    last_microsecond = datetime.combine(handoff_day, time(8, 59, 59, 999999), BERLIN)
    at = datetime.combine(handoff_day, time(9, 0), BERLIN)
    assert r.on_call_at(before) == A
    assert r.on_call_at(last_microsecond) == A
    assert r.on_call_at(at) == B


def test_any_aware_instant_works_whatever_its_zone() -> None:
    r = rotation()
    handoff = local(BERLIN, 2026, 1, 12, 9, 0)
    assert r.on_call_at(handoff.astimezone(UTC)) == B
    assert r.on_call_at(handoff.astimezone(NEW_YORK)) == B
    assert r.on_call_at(utc(2026, 1, 12, 7, 59)) == A  # 08:59 in Berlin (UTC+1)


def test_daily_rotation_hands_off_every_day() -> None:
    r = rotation("daily", members=(A, B))
    assert [r.on_call_at(local(BERLIN, 2026, 1, d, 12, 0)) for d in range(5, 10)] == [A, B, A, B, A]
    assert r.on_call_at(local(BERLIN, 2026, 1, 6, 8, 0)) == A  # still yesterday's shift


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rotation().on_call_at(datetime(2026, 1, 12, 9, 0))


# ---------------------------------------------------------------- DST: calendar shifts


def test_weekly_berlin_spring_forward_keeps_the_wall_clock_handoff() -> None:
    """After 2026-03-29 (clocks 02:00 -> 03:00) the handoff is still at 09:00 local (now 07:00
    UTC, not 08:00)."""
    r = rotation()
    # Shift 11 (Mon 23 March 09:00 CET) belongs to members[11 % 3] = C.
    assert r.on_call_at(utc(2026, 3, 30, 6, 59)) == C
    assert r.on_call_at(utc(2026, 3, 30, 7, 0)) == A
    assert r.on_call_at(local(BERLIN, 2026, 3, 30, 9, 0)) == A
    assert r.on_call_at(local(BERLIN, 2026, 3, 30, 8, 59)) == C


def test_weekly_berlin_fall_back_keeps_the_wall_clock_handoff() -> None:
    r = rotation()
    assert r.on_call_at(local(BERLIN, 2026, 10, 26, 8, 59)) == C  # shift 41 -> members[2]
    assert r.on_call_at(local(BERLIN, 2026, 10, 26, 9, 0)) == A
    assert r.on_call_at(utc(2026, 10, 26, 7, 59)) == C  # 08:59 CET


def test_daily_berlin_handoffs_keep_the_wall_clock_across_dst() -> None:
    r = rotation("daily", start=date(2026, 3, 1), members=(A, B))
    # Mar 1 is shift 0 (A); Mar 29 is shift 28 (A), Mar 28 is shift 27 (B).
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 8, 59)) == B
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 9, 0)) == A
    assert r.on_call_at(utc(2026, 3, 29, 7, 0)) == A


def test_weekly_new_york_across_spring_forward() -> None:
    r = rotation(timezone="America/New_York", members=(A, B))
    # 2026-03-08 02:00 EST -> 03:00 EDT. Shift 8 (Mon 2 March) is A's; Mon 9 March is B's.
    assert r.on_call_at(local(NEW_YORK, 2026, 3, 9, 8, 59)) == A
    assert r.on_call_at(local(NEW_YORK, 2026, 3, 9, 9, 0)) == B


def test_daily_new_york_handoff_keeps_the_wall_clock_across_spring_forward() -> None:
    r = rotation("daily", timezone="America/New_York", start=date(2026, 3, 1), members=(A, B))
    assert r.on_call_at(utc(2026, 3, 8, 12, 59)) == A  # 08:59 EDT, shift 6
    assert r.on_call_at(utc(2026, 3, 8, 13, 0)) == B  # 09:00 EDT, shift 7


def test_a_handoff_time_that_does_not_exist_happens_an_hour_later_by_the_clock() -> None:
    """02:30 does not exist in Berlin on 2026-03-29; PEP 495 reads it with the winter offset,
    which is 03:30 summer time."""
    r = rotation("daily", start=date(2026, 3, 27), handoff=time(2, 30), members=(A, B))
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 3, 29)) == B
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 3, 30)) == A


def test_a_handoff_time_that_happens_twice_is_its_first_occurrence() -> None:
    r = rotation("daily", start=date(2026, 10, 20), handoff=time(2, 30), members=(A, B))
    first = local(BERLIN, 2026, 10, 25, 2, 30, fold=0)  # 00:30 UTC, summer time
    second = local(BERLIN, 2026, 10, 25, 2, 30, fold=1)  # 01:30 UTC, winter time
    assert r.on_call_at(first) == B  # shift 5
    assert r.on_call_at(second) == B
    assert r.on_call_at(first - timedelta(minutes=1)) == A


# ---------------------------------------------------------------- DST: fixed-length shifts


def test_12h_shifts_are_exact_elapsed_time_across_spring_forward() -> None:
    """First handoff 09:00 CET = 08:00 UTC; every 12 h after that, whatever the wall clock says,
    so after the change handoffs land at 10:00 and 22:00 summer time."""
    r = rotation(timedelta(hours=12), start=date(2026, 3, 28), members=(A, B))
    assert r.on_call_at(local(BERLIN, 2026, 3, 28, 9, 0)) == A
    assert r.on_call_at(local(BERLIN, 2026, 3, 28, 21, 0)) == B
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 9, 0)) == B  # not a handoff any more
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 9, 59)) == B
    assert r.on_call_at(local(BERLIN, 2026, 3, 29, 10, 0)) == A


def test_12h_shifts_are_exact_elapsed_time_across_new_york_fall_back() -> None:
    r = rotation(
        timedelta(hours=12), timezone="America/New_York", start=date(2026, 10, 31), members=(A, B)
    )
    # 09:00 EDT = 13:00 UTC; 01:00 UTC; then 13:00 UTC on Nov 1 = 08:00 EST.
    assert r.on_call_at(local(NEW_YORK, 2026, 11, 1, 7, 59)) == B
    assert r.on_call_at(local(NEW_YORK, 2026, 11, 1, 8, 0)) == A


# ---------------------------------------------------------------- start, one member, far future


def test_nobody_is_on_call_before_the_first_handoff() -> None:
    r = rotation()
    assert r.on_call_at(local(BERLIN, 2026, 1, 5, 8, 59)) is None
    assert r.on_call_at(local(BERLIN, 2025, 6, 1, 12, 0)) is None
    assert rotation(timedelta(hours=12)).on_call_at(local(BERLIN, 2026, 1, 5, 8, 59)) is None


@pytest.mark.parametrize("shift", ["daily", "weekly", timedelta(hours=8)])
def test_a_one_member_rotation_is_always_that_member(shift: ShiftLength) -> None:
    r = rotation(shift, members=(A,))
    instants = [
        local(BERLIN, 2026, 1, 5, 9, 0),
        local(BERLIN, 2026, 3, 29, 4, 0),
        local(BERLIN, 2026, 10, 25, 2, 30, fold=1),
        local(BERLIN, 2031, 7, 1, 0, 0),
    ]
    assert {r.on_call_at(i) for i in instants} == {A}
    assert r.on_call_at(local(BERLIN, 2026, 1, 5, 8, 59)) is None


@pytest.mark.parametrize(
    ("shift", "first_handoff_of_1000"),
    [
        ("weekly", local(BERLIN, 2026, 1, 5, 9, 0).replace(tzinfo=None) + timedelta(days=7000)),
        ("daily", local(BERLIN, 2026, 1, 5, 9, 0).replace(tzinfo=None) + timedelta(days=1000)),
    ],
)
def test_shift_1000_is_exact_long_after_start(
    shift: ShiftLength, first_handoff_of_1000: datetime
) -> None:
    r = rotation(shift)
    at = first_handoff_of_1000.replace(tzinfo=BERLIN)
    assert r.on_call_at(at) == (A, B, C)[1000 % 3]
    assert r.on_call_at(at - timedelta(minutes=1)) == (A, B, C)[999 % 3]


def test_shift_1000_of_a_12h_rotation() -> None:
    r = rotation(timedelta(hours=12))
    at = utc(2026, 1, 5, 8, 0) + 1000 * timedelta(hours=12)
    assert r.on_call_at(at) == (A, B, C)[1000 % 3]
    assert r.on_call_at(at - timedelta(seconds=1)) == (A, B, C)[999 % 3]


# ---------------------------------------------------------------- overrides


CHRISTMAS = Override(DAVE, datetime(2026, 12, 24, 0, 0), datetime(2026, 12, 27, 0, 0))


def test_an_override_replaces_whoever_is_on_call_in_its_window() -> None:
    r = rotation(overrides=(CHRISTMAS,))
    plain = rotation()
    assert r.on_call_at(local(BERLIN, 2026, 12, 25, 12, 0)) == DAVE
    assert plain.on_call_at(local(BERLIN, 2026, 12, 25, 12, 0)) != DAVE
    # Outside the window the schedule is untouched.
    for instant in (local(BERLIN, 2026, 12, 20, 12, 0), local(BERLIN, 2027, 1, 2, 12, 0)):
        assert r.on_call_at(instant) == plain.on_call_at(instant)


def test_an_override_covers_its_start_but_not_its_end() -> None:
    r = rotation(overrides=(CHRISTMAS,))
    scheduled = rotation().on_call_at(local(BERLIN, 2026, 12, 24, 0, 0))
    assert r.on_call_at(local(BERLIN, 2026, 12, 23, 23, 59)) == scheduled
    assert r.on_call_at(local(BERLIN, 2026, 12, 24, 0, 0)) == DAVE
    assert r.on_call_at(local(BERLIN, 2026, 12, 26, 23, 59)) == DAVE
    assert r.on_call_at(local(BERLIN, 2026, 12, 27, 0, 0)) == rotation().on_call_at(
        local(BERLIN, 2026, 12, 27, 0, 0)
    )


def test_override_times_are_local_to_the_rotation_not_utc() -> None:
    r = rotation(timezone="America/New_York", overrides=(CHRISTMAS,))
    assert r.on_call_at(utc(2026, 12, 24, 4, 59)) != DAVE  # 23:59 EST on the 23rd
    assert r.on_call_at(utc(2026, 12, 24, 5, 0)) == DAVE


def test_the_override_listed_last_wins_where_two_overlap() -> None:
    extra = Override(B, datetime(2026, 12, 25, 0, 0), datetime(2026, 12, 26, 0, 0))
    r = rotation(overrides=(CHRISTMAS, extra))
    assert r.on_call_at(local(BERLIN, 2026, 12, 24, 12, 0)) == DAVE
    assert r.on_call_at(local(BERLIN, 2026, 12, 25, 12, 0)) == B
    assert r.on_call_at(local(BERLIN, 2026, 12, 26, 12, 0)) == DAVE


def test_an_override_applies_even_before_the_rotation_starts() -> None:
    early = Override(DAVE, datetime(2026, 1, 1, 0, 0), datetime(2026, 1, 2, 0, 0))
    r = rotation(overrides=(early,))
    assert r.on_call_at(local(BERLIN, 2026, 1, 1, 12, 0)) == DAVE
    assert r.on_call_at(local(BERLIN, 2026, 1, 3, 12, 0)) is None


def test_aware_override_times_are_taken_as_they_are() -> None:
    aware = Override(DAVE, utc(2026, 2, 2, 0, 0), utc(2026, 2, 2, 1, 0))
    r = rotation(overrides=(aware,))
    assert r.on_call_at(local(BERLIN, 2026, 2, 2, 1, 30)) == DAVE  # 00:30 UTC
    assert r.on_call_at(local(BERLIN, 2026, 2, 2, 2, 0)) != DAVE


# ---------------------------------------------------------------- domain validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"members": ()}, "at least one member"),
        ({"members": (A, "")}, "at least one member"),
        ({"timezone": "Europe/Atlantis"}, "not a known time zone"),
        ({"timezone": "../etc/passwd"}, "not a known time zone"),
        ({"shift": timedelta(seconds=30)}, "at least 1m"),
        ({"shift": "monthly"}, "daily, weekly or a duration"),
        ({"handoff": time(9, 0, tzinfo=UTC)}, "local time"),
        (
            {"overrides": (Override(DAVE, datetime(2026, 2, 2), datetime(2026, 2, 2)),)},
            "must end after it starts",
        ),
        (
            {"overrides": (Override(DAVE, datetime(2026, 2, 3), datetime(2026, 2, 2)),)},
            "must end after it starts",
        ),
        (
            {"overrides": (Override("", datetime(2026, 2, 2), datetime(2026, 2, 3)),)},
            "needs a user",
        ),
    ],
)
def test_an_unusable_rotation_is_refused(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "name": "r",
        "timezone": "Europe/Berlin",
        "start": date(2026, 1, 5),
        "shift": "weekly",
        "handoff": time(9),
        "members": (A,),
    }
    with pytest.raises(RotationError, match=message):
        StaticRotation(**{**fields, **changes})


# ---------------------------------------------------------------- the policy section

ISSUE_EXAMPLE = """\
payments-primary:
  type: static
  timezone: Europe/Berlin
  start: 2026-01-05
  shift: weekly
  handoff: "09:00"
  members: [U0ALICE, U0BOB, U0CAROL]
  overrides:
    - {user: U0DAVE, from: "2026-12-24T00:00", to: "2026-12-27T00:00"}
night-shift:
  type: static
  timezone: America/New_York
  start: 2026-03-01
  shift: 12h
  handoff: "21:30"
  members: [U0ERIN]
platform:
  type: pagerduty
  schedule_id: PABC123
platform-secondary:
  type: pagerduty
  escalation_policy_id: PXYZ789
  escalation_level: 2
platform-first:
  type: pagerduty
  escalation_policy_id: PXYZ789
sre-leads:
  type: usergroup
  usergroup: S0SRELEADS
"""

ROTATIONS: TypeAdapter[dict[str, RotationConfig]] = TypeAdapter(dict[str, RotationConfig])


def parse(raw: Any) -> dict[str, RotationConfig]:
    return ROTATIONS.validate_python(raw)


def test_the_issue_example_parses_into_the_right_models() -> None:
    rotations = parse(yaml.safe_load(ISSUE_EXAMPLE))
    primary = rotations["payments-primary"]
    assert isinstance(primary, StaticRotationConfig)
    assert primary.start == date(2026, 1, 5)
    assert primary.shift == "weekly"
    assert primary.handoff == time(9, 0)
    assert primary.members == (A, B, C)
    assert primary.overrides[0].starts == datetime(2026, 12, 24)
    night = rotations["night-shift"]
    assert isinstance(night, StaticRotationConfig)
    assert night.shift == timedelta(hours=12)
    assert night.handoff == time(21, 30)
    platform = rotations["platform"]
    assert isinstance(platform, PagerDutyRotationConfig)
    assert (platform.schedule_id, platform.escalation_policy_id) == ("PABC123", None)
    secondary = rotations["platform-secondary"]
    assert isinstance(secondary, PagerDutyRotationConfig)
    assert (secondary.escalation_policy_id, secondary.escalation_level) == ("PXYZ789", 2)
    first = rotations["platform-first"]
    assert isinstance(first, PagerDutyRotationConfig) and first.escalation_level == 1
    leads = rotations["sre-leads"]
    assert isinstance(leads, UsergroupRotationConfig) and leads.usergroup == "S0SRELEADS"


def test_to_static_rotation_computes_the_same_schedule() -> None:
    config = parse(yaml.safe_load(ISSUE_EXAMPLE))["payments-primary"]
    assert isinstance(config, StaticRotationConfig)
    r = config.to_static_rotation("payments-primary")
    assert r.name == "payments-primary"
    assert r.on_call_at(local(BERLIN, 2026, 1, 12, 9, 0)) == B
    assert r.on_call_at(local(BERLIN, 2026, 12, 25, 9, 0)) == DAVE


STATIC: dict[str, Any] = {
    "type": "static",
    "timezone": "Europe/Berlin",
    "start": "2026-01-05",
    "shift": "weekly",
    "handoff": "09:00",
    "members": [A],
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "not a known time zone"),
        ({"handoff": "9:00"}, "24-hour local time"),
        ({"handoff": "24:00"}, "24-hour local time"),
        ({"handoff": 600}, "in quotes"),  # YAML 1.1 reads an unquoted 10:00 as 600
        ({"shift": "fortnightly"}, "daily, weekly, or a duration"),
        ({"shift": 3600}, "daily, weekly, or a duration"),
        ({"shift": "30s"}, "at least 1m"),
        ({"members": []}, "at least 1 item"),
        ({"members": ["alice"]}, "not a Slack user id"),
        ({"start": "2026-01-05T09:00:00"}, "write a date"),
        ({"start": "2026-01-05T00:00:00"}, "write a date"),
        ({"start": datetime(2026, 1, 5, 9, 0)}, "write a date"),  # unquoted YAML timestamp
        ({"start": "5.1.2026"}, "write a date"),
        (
            {"overrides": [{"user": DAVE, "from": "2026-12-27T00:00", "to": "2026-12-24T00:00"}]},
            "must end after it starts",
        ),
        (
            {
                "overrides": [
                    {"user": DAVE, "from": "2026-12-24T00:00+01:00", "to": "2026-12-27T00:00"}
                ]
            },
            "without an offset",
        ),
        (
            {"overrides": [{"user": "dave", "from": "2026-12-24T00:00", "to": "2026-12-27T00:00"}]},
            "not a Slack user id",
        ),
        (
            {"overrides": [{"user": DAVE, "from": "2026-12-24T00:00", "until": "2026-12-27"}]},
            "Field required",
        ),
        ({"members": [A], "owner": "me"}, "Extra inputs are not permitted"),
    ],
)
def test_an_invalid_static_rotation_is_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse({"r": {**STATIC, **changes}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"type": "pagerduty"}, "exactly one of schedule_id or escalation_policy_id"),
        (
            {"type": "pagerduty", "schedule_id": "PABC123", "escalation_policy_id": "PXYZ789"},
            "exactly one of schedule_id or escalation_policy_id",
        ),
        (
            {"type": "pagerduty", "schedule_id": "PABC123", "escalation_level": 2},
            "only applies with escalation_policy_id",
        ),
        (
            {"type": "pagerduty", "escalation_policy_id": "PXYZ789", "escalation_level": 0},
            "greater than or equal to 1",
        ),
        ({"type": "pagerduty", "schedule_id": "pabc 123"}, "not a PagerDuty id"),
        ({"type": "pagerduty", "schedule_id": "PABC123", "token": "x"}, "Extra inputs"),
        ({"type": "usergroup", "usergroup": "sre-leads"}, "not a Slack user group id"),
        ({"type": "usergroup"}, "Field required"),
        ({"type": "opsgenie", "schedule": "x"}, "does not match any of the expected tags"),
    ],
)
def test_an_invalid_provider_rotation_is_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse({"r": raw})


def test_rotation_configs_are_frozen() -> None:
    config = parse({"r": STATIC})["r"]
    with pytest.raises(ValidationError):
        config.type = "usergroup"  # type: ignore[misc]


def test_approver_entries_are_user_ids_or_rotation_names() -> None:
    assert check_approver_entry("U0ALICE") == "U0ALICE"
    assert check_approver_entry("W0ENTERPRISE") == "W0ENTERPRISE"
    assert check_approver_entry("payments-primary") == "payments-primary"
    for bad in ("S0SRELEADS", "Payments", "<@U0ALICE>", "", "a b"):
        with pytest.raises(ValueError, match=r"is not a Slack user id .* or a rotation name"):
            check_approver_entry(bad)
    defined = {"payments-primary"}
    assert check_approver_entry("payments-primary", defined) == "payments-primary"
    assert check_approver_entry("U0ALICE", defined) == "U0ALICE"
    with pytest.raises(ValueError, match="or a rotation defined under `rotations:`"):
        check_approver_entry("platform", defined)
    with pytest.raises(ValueError, match="or a rotation name"):
        check_approver_entry("S0SRELEADS", defined)
    assert undefined_rotations(["U0ALICE", "platform", "nope"], {"platform"}) == ["nope"]
    check_rotation_names(["payments-primary", "sre_leads"])
    with pytest.raises(ValueError, match="lowercase"):
        check_rotation_names(["U0ALICE"])
