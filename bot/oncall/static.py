"""``type: static`` rotations: the schedule is in the policy, so the answer is computed."""

from __future__ import annotations

from datetime import datetime

from bot.domain.rotations import StaticRotation
from bot.oncall.base import OnCall


class StaticSource:
    """``OnCallSource`` for a ``StaticRotation``. Never unavailable, never cached."""

    def __init__(self, rotation: StaticRotation) -> None:
        self.rotation = rotation

    @property
    def name(self) -> str:
        return self.rotation.name

    def current(self, now: datetime) -> OnCall:
        member = self.rotation.on_call_at(now)
        if member is None:
            return OnCall(self.name, (), note="nobody on call (the rotation has not started)")
        return OnCall(self.name, (member,))
