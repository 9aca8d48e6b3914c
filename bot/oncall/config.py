"""The ``rotations:`` section of the policy file: one entry per named rotation.

```yaml
rotations:
  payments-primary: {type: static, timezone: Europe/Berlin, start: 2026-01-05, shift: weekly,
                     handoff: "09:00", members: [U0ALICE, U0BOB]}
  platform: {type: pagerduty, schedule_id: PABC123}
  sre-leads: {type: usergroup, usergroup: S0SRELEADS}
```

A rotation name may then appear in a resource's ``approvers`` next to Slack user ids. Names are
lowercase (like resource names) so they can never be mistaken for a Slack user id.

Imported by ``bot.policy``; it must not import it back.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bot.domain.durations import DurationError, parse_duration
from bot.domain.identifiers import POLICY_NAME, SLACK_USER_ID, SLACK_USERGROUP_ID
from bot.domain.rotations import Override, RotationError, StaticRotation, load_zone

ROTATION_NAME = POLICY_NAME
PAGERDUTY_ID = re.compile(r"^[A-Z0-9]{2,20}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HANDOFF = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _to_shift(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        if value.strip().lower() in {"daily", "weekly"}:
            return value.strip().lower()
        try:
            return parse_duration(value)
        except DurationError:
            pass
    raise ValueError("write daily, weekly, or a duration with a unit like 12h")


def _to_handoff(value: Any) -> Any:
    if isinstance(value, time):
        return value
    if isinstance(value, str):
        match = _HANDOFF.fullmatch(value.strip())
        if match:
            return time(int(match.group(1)), int(match.group(2)))
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 10:00 as the base-60 number 600.
        raise ValueError('write the handoff time in quotes, like "09:00"')
    raise ValueError('must be a 24-hour local time like "09:00"')


def _slack_user(value: str) -> str:
    if not SLACK_USER_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack user id (like U0123ABCD)")
    return value


ShiftField = Annotated[Literal["daily", "weekly"] | timedelta, BeforeValidator(_to_shift)]
HandoffField = Annotated[time, BeforeValidator(_to_handoff)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OverrideConfig(_Strict):
    """``{user: U0DAVE, from: "2026-12-24T00:00", to: "2026-12-27T00:00"}``: local times in the
    rotation's time zone, ``to`` excluded."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    user: str
    starts: datetime = Field(alias="from")
    ends: datetime = Field(alias="to")

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        return _slack_user(value)

    @field_validator("starts", "ends")
    @classmethod
    def _local(cls, value: datetime) -> datetime:
        if value.tzinfo is not None:
            raise ValueError(
                "write a local time without an offset, like 2026-12-24T00:00 "
                "(the rotation's timezone applies)"
            )
        return value


class StaticRotationConfig(_Strict):
    """A schedule kept in the policy: members take turns, shift after shift."""

    type: Literal["static"]
    timezone: str
    start: date
    shift: ShiftField
    handoff: HandoffField
    members: tuple[str, ...] = Field(min_length=1)
    overrides: tuple[OverrideConfig, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            load_zone(value)
        except RotationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("start", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        if isinstance(value, datetime) or (
            isinstance(value, str) and not _DATE.fullmatch(value.strip())
        ):
            raise ValueError("write a date like 2026-01-05 (the handoff time is separate)")
        return value

    @field_validator("members")
    @classmethod
    def _members(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for member in value:
            _slack_user(member)
        return value

    @model_validator(mode="after")
    def _rotation(self) -> StaticRotationConfig:
        try:
            self.to_static_rotation("rotation")
        except RotationError as exc:
            raise ValueError(str(exc).removeprefix("rotation 'rotation': ")) from None
        return self

    def to_static_rotation(self, name: str) -> StaticRotation:
        """The domain object for this rotation, called ``name``."""
        return StaticRotation(
            name=name,
            timezone=self.timezone,
            start=self.start,
            shift=self.shift,
            handoff=self.handoff,
            members=self.members,
            overrides=tuple(Override(o.user, o.starts, o.ends) for o in self.overrides),
        )


class PagerDutyRotationConfig(_Strict):
    """Whoever PagerDuty has on call in a schedule, or at one level of an escalation policy."""

    type: Literal["pagerduty"]
    schedule_id: str | None = None
    escalation_policy_id: str | None = None
    escalation_level: int = Field(default=1, ge=1, le=20)

    @field_validator("schedule_id", "escalation_policy_id")
    @classmethod
    def _pagerduty_id(cls, value: str | None) -> str | None:
        if value is not None and not PAGERDUTY_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a PagerDuty id (like PABC123)")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> PagerDutyRotationConfig:
        if (self.schedule_id is None) == (self.escalation_policy_id is None):
            raise ValueError("set exactly one of schedule_id or escalation_policy_id")
        if self.schedule_id is not None and "escalation_level" in self.model_fields_set:
            raise ValueError("escalation_level only applies with escalation_policy_id")
        return self


class UsergroupRotationConfig(_Strict):
    """Every member of a Slack user group counts as on call."""

    type: Literal["usergroup"]
    usergroup: str

    @field_validator("usergroup")
    @classmethod
    def _usergroup(cls, value: str) -> str:
        if not SLACK_USERGROUP_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a Slack user group id (like S0123ABCD)")
        return value


RotationConfig = Annotated[
    StaticRotationConfig | PagerDutyRotationConfig | UsergroupRotationConfig,
    Field(discriminator="type"),
]


def check_rotation_names(names: Iterable[str]) -> None:
    """Raise ValueError unless every rotation name is lowercase letters, digits, - or _."""
    for name in names:
        if not ROTATION_NAME.fullmatch(name):
            raise ValueError(f"rotation name {name!r} must be lowercase letters, digits, - or _")


def check_approver_entry(entry: str, rotations: Collection[str] | None = None) -> str:
    """Raise ValueError unless ``entry`` is a Slack user id or a rotation name, and, when the
    defined ``rotations`` are known, one of them. (Without them only the shape is checked;
    ``undefined_rotations`` finishes the job once the whole policy is read.)"""
    if SLACK_USER_ID.fullmatch(entry):
        return entry
    if rotations is None and ROTATION_NAME.fullmatch(entry):
        return entry
    if rotations is not None and entry in rotations:
        return entry
    if rotations is not None and ROTATION_NAME.fullmatch(entry):
        raise ValueError(
            f"{entry!r} is not a Slack user id (like U0123ABCD) or a rotation "
            "defined under `rotations:`"
        )
    raise ValueError(f"{entry!r} is not a Slack user id (like U0123ABCD) or a rotation name")


def undefined_rotations(approvers: Iterable[str], rotations: Collection[str]) -> list[str]:
    """The approver entries that are not Slack user ids and name no defined rotation."""
    return [
        entry
        for entry in approvers
        if not SLACK_USER_ID.fullmatch(entry) and entry not in rotations
    ]


def is_slack_user_id(entry: str) -> bool:
    """True for ``U…``/``W…`` ids; False for rotation names."""
    return SLACK_USER_ID.fullmatch(entry) is not None
