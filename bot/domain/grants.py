"""A grant's life: what Vault issued for an approved request, and the states it may move through.

    ISSUING --issued--> DELIVERING --delivered--> ACTIVE --end--> REVOKING --confirmed--> REVOKED
       |                    |                                     ^   |
       +--issue failed------+--undeliverable / end----------------+   +--revocation failed, or
                                                                         a stale claim taken
                                                                         over: REVOKING again

DELIVERING says that Vault issued the credentials but the requester does not have them yet.
Delivery is a step of issuing: a grant leaves DELIVERING only when the DM was sent (ACTIVE) or
when it is given up, and then it is revoked (never left live with nobody told). The credentials
themselves are never stored, so only the process that issued them can deliver them; a grant
found DELIVERING with that process gone is revoked.

REVOKING is a claim: whoever moves a grant there owns the revocation until it records the
outcome. REVOKING -> REVOKING is allowed, and only this self-loop, for two reasons that the
caller states as an extra condition on the claim:

- a revocation that failed releases its claim and stays REVOKING until it is retried;
- a claim older than the claim timeout belongs to a replica that died mid-revocation, and the
  next caller takes it over (re-claims it) instead of leaving the credentials live.

A grant never moves back to ACTIVE, and REVOKED is final: fail closed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class GrantStatus(enum.StrEnum):
    ISSUING = "issuing"
    DELIVERING = "delivering"
    ACTIVE = "active"
    REVOKING = "revoking"
    REVOKED = "revoked"


GRANT_TRANSITIONS: Mapping[GrantStatus, frozenset[GrantStatus]] = {
    GrantStatus.ISSUING: frozenset({GrantStatus.DELIVERING, GrantStatus.REVOKING}),
    GrantStatus.DELIVERING: frozenset({GrantStatus.ACTIVE, GrantStatus.REVOKING}),
    GrantStatus.ACTIVE: frozenset({GrantStatus.REVOKING}),
    # The self-loop: a failed revocation releases its claim, a stale claim is taken over.
    GrantStatus.REVOKING: frozenset({GrantStatus.REVOKING, GrantStatus.REVOKED}),
    GrantStatus.REVOKED: frozenset(),
}


def grant_sources(target: GrantStatus) -> frozenset[GrantStatus]:
    """Every state from which a grant may move to ``target`` (the guard of a claim)."""
    return frozenset(s for s, targets in GRANT_TRANSITIONS.items() if target in targets)
