"""Who is asked to approve: the approver tiers with someone in them now (submit asks the
first, escalation the next)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from datetime import datetime

from bot.domain.errors import NotAllowed
from bot.policy import Resource
from bot.ports import ApproverDirectory, ApproverTier


def staffed_tiers(
    approvers: ApproverDirectory,
    resource_name: str,
    resource: Resource,
    requester: str,
    now: datetime,
    locked: Collection[str] = (),
) -> tuple[list[ApproverTier], str | None]:
    """The approver tiers with someone in them now, and the routing notes (fallbacks).
    ``locked`` users (an admin's kill switch) are nobody's approver: left out of every tier."""
    tiers = [
        replace(tier, users=tuple(u for u in tier.users if u not in locked))
        for tier in approvers.tiers(resource.approvers, requester, now)
    ]
    notes = [t.note for t in tiers if t.note]
    staffed = [t for t in tiers if t.users]
    if not staffed:
        raise NotAllowed(
            f"Nobody but you can approve `{resource_name}` right now"
            + (f" ({'; '.join(notes)})" if notes else "")
            + ". Ask the owners of the policy to add approvers."
        )
    return staffed, "; ".join(notes) or None
