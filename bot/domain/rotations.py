"""Who is on call in a rotation kept in the policy, at any instant.

Shift ``n`` (counted from 0) begins at the ``n``-th handoff after ``start`` and belongs to
``members[n mod len(members)]``. Handoffs are defined in the rotation's own time zone, because
that is how people agree on them ("we hand over Mondays at 09:00 Berlin time"):

* ``daily`` and ``weekly`` shifts hand off at the local wall-clock ``handoff`` time every day or
  every seventh day, so the shift that spans a DST change lasts 23 or 25 hours;
* a fixed ``timedelta`` shift (``12h``) is exact elapsed time counted from the first handoff,
  so after a DST change its handoffs land an hour earlier or later on the wall clock.

A handoff instant belongs to the new shift (shifts are half-open ``[start, end)``). A local
handoff time that does not exist on a spring-forward day is read with the offset in force
before the change (02:30 becomes 03:30 summer time); one that happens twice on a fall-back day
is its first occurrence. These are PEP 495's rules (``fold=0``).

Overrides replace whoever is on call during ``[starts, ends)``; when several cover the same
instant, the one listed last wins. An override applies even before the rotation's ``start``,
since it names a person explicitly. Otherwise nobody is on call before the first handoff.

Pure: the standard library's ``zoneinfo`` and ``datetime`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ShiftLength = Literal["daily", "weekly"] | timedelta

_CALENDAR_DAYS = {"daily": 1, "weekly": 7}
MINIMUM_SHIFT = timedelta(minutes=1)


class RotationError(ValueError):
    """The rotation is not usable as written."""


def load_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; RotationError if there is no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RotationError(f"{name!r} is not a known time zone (like Europe/Berlin)") from None


def _require_aware(instant: datetime) -> datetime:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(UTC)


@dataclass(frozen=True)
class Override:
    """``user`` is on call instead of the scheduled member during ``[starts, ends)``.

    Naive datetimes are local wall-clock times in the rotation's time zone (as written in the
    policy); aware ones are taken as they are.
    """

    user: str
    starts: datetime
    ends: datetime


@dataclass(frozen=True)
class StaticRotation:
    """A rotation whose schedule is written in the policy. See the module docstring."""

    name: str
    timezone: str
    start: date
    shift: ShiftLength
    handoff: time
    members: tuple[str, ...]
    overrides: tuple[Override, ...] = ()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _override_windows: tuple[tuple[datetime, datetime, str], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        zone = load_zone(self.timezone)
        object.__setattr__(self, "_zone", zone)
        if not self.members or any(not member for member in self.members):
            raise RotationError(f"rotation {self.name!r}: needs at least one member")
        if isinstance(self.shift, timedelta):
            if self.shift < MINIMUM_SHIFT:
                raise RotationError(f"rotation {self.name!r}: a shift must last at least 1m")
        elif self.shift not in _CALENDAR_DAYS:
            raise RotationError(
                f"rotation {self.name!r}: shift must be daily, weekly or a duration like 12h"
            )
        if self.handoff.tzinfo is not None:
            raise RotationError(
                f"rotation {self.name!r}: handoff is a local time, without "
                "a time zone (the rotation's timezone applies)"
            )
        windows = []
        for override in self.overrides:
            if not override.user:
                raise RotationError(f"rotation {self.name!r}: an override needs a user")
            starts, ends = self._instant(override.starts), self._instant(override.ends)
            if starts >= ends:
                raise RotationError(
                    f"rotation {self.name!r}: override for {override.user} must end after it "
                    f"starts ({override.starts.isoformat()} to {override.ends.isoformat()})"
                )
            windows.append((starts, ends, override.user))
        object.__setattr__(self, "_override_windows", tuple(windows))

    # ------------------------------------------------------------------ public queries

    def on_call_at(self, instant: datetime) -> str | None:
        """Who is on call at ``instant`` (any aware datetime); None before the first handoff."""
        moment = _require_aware(instant)
        for starts, ends, user in reversed(self._override_windows):
            if starts <= moment < ends:
                return user
        index = self._shift_index(moment)
        if index is None:
            return None
        return self.members[index % len(self.members)]

    # ------------------------------------------------------------------ arithmetic

    def _instant(self, value: datetime) -> datetime:
        if value.tzinfo is None:
            value = value.replace(tzinfo=self._zone, fold=0)
        return value.astimezone(UTC)

    def _handoff(self, index: int) -> datetime:
        """The UTC instant at which shift ``index`` begins (index 0 is the first shift)."""
        if isinstance(self.shift, timedelta):
            return self._first_handoff() + index * self.shift
        day = self.start + timedelta(days=index * _CALENDAR_DAYS[self.shift])
        return self._instant(datetime.combine(day, self.handoff))

    def _first_handoff(self) -> datetime:
        return self._instant(datetime.combine(self.start, self.handoff))

    def _shift_index(self, moment: datetime) -> int | None:
        """The index of the shift containing the UTC instant ``moment``; None before start."""
        first = self._first_handoff()
        if moment < first:
            return None
        if isinstance(self.shift, timedelta):
            return (moment - first) // self.shift
        days = (moment.astimezone(self._zone).date() - self.start).days
        index = max(days // _CALENDAR_DAYS[self.shift], 0)
        # The local date gives the right shift or a neighbour (before today's handoff time, or
        # across an odd DST edge); settle it by comparing real instants.
        while index > 0 and self._handoff(index) > moment:
            index -= 1
        while self._handoff(index + 1) <= moment:
            index += 1
        return index
