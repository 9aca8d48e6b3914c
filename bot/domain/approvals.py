"""How approvals add up: ``approvals_required`` distinct approvers, one Deny ends it.

Pure arithmetic over the decisions recorded so far; the lifecycle holds the row lock that makes
the count and the state change one atomic step.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from bot.domain.errors import Conflict


@dataclass(frozen=True)
class Tally:
    approvals: int
    required: int

    @property
    def complete(self) -> bool:
        return self.approvals >= self.required

    @property
    def progress(self) -> str:
        """``1 of 2 approvals`` (empty for single-approval requests)."""
        if self.required <= 1:
            return ""
        return f"{self.approvals} of {self.required} approvals"


def tally_after(approvers_so_far: Collection[str], actor: str, required: int) -> Tally:
    """Count ``actor``'s approval on top of the earlier ones; a second click by the same person
    is refused, so one person can never supply two of the N approvals."""
    if actor in approvers_so_far:
        raise Conflict("You already approved this request; it needs another approver.")
    return Tally(approvals=len(set(approvers_so_far)) + 1, required=required)
