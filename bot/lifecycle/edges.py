"""What the use cases talk to: the database, the policy, Vault, Slack, the clock and the
approver directory, handed to each use case as one ``Edges`` value (so a test swaps any of
them for a fake, and no use case reaches for a global)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from bot.domain.errors import NotAllowed, NotFound
from bot.domain.identifiers import SLACK_USERGROUP_ID
from bot.issuer import Issuer
from bot.policy import Policy, Resource
from bot.ports import ApproverDirectory, Clock, Notifier, WorkLocks
from bot.store.locks import LocalLocks

# Who the audit trail names when the bot acts by itself (expiry, escalation, retries).
SYSTEM_ACTOR = "debug-access"


class EndReason:
    """Why a grant ended (stored on the grant and shown in the audit trail)."""

    EXPIRED = "expired"
    REVOKED = "revoked"
    ISSUE_FAILED = "issue_failed"
    DELIVERY_FAILED = "delivery_failed"
    NOT_COLLECTED = "not_collected"
    LOCKED = "locked"  # an admin locked the requester


class Via:
    """Where a person acted, recorded as the audit event's ``via`` detail when it is not Slack:
    auditors tell a decision taken on the bot's command line (Slack down) from a click."""

    SLACK = "slack"
    CLI = "cli"


def via_details(via: str) -> dict[str, object]:
    """The audit event's ``via`` detail: none for Slack (as before there was another way)."""
    return {} if via == Via.SLACK else {"via": via}


def via_suffix(via: str) -> str:
    """What the audit channel adds after "denied by @someone": `` via CLI``, or nothing."""
    if via == Via.SLACK:
        return ""
    return " via CLI" if via == Via.CLI else f" via {via}"


@dataclass(frozen=True)
class Edges:
    """The outside world of the use cases, each behind its interface in ``bot.ports``."""

    engine: Engine
    policy: Policy
    issuer: Issuer
    notifier: Notifier
    clock: Clock
    approvers: ApproverDirectory
    #: Who is issuing which request (advisory locks on PostgreSQL; in memory for one process).
    locks: WorkLocks = field(default_factory=LocalLocks)

    def resource(self, name: str) -> Resource:
        """The policy's resource, or NotFound: a request may outlive its resource's entry."""
        resource = self.policy.resource(name)
        if resource is None:
            raise NotFound(f"`{name}` is no longer in the policy.")
        return resource

    def is_admin(self, user: str) -> bool:
        """Whether the policy's ``admins`` name ``user``, directly or by a user group."""
        admins = self.policy.admins
        if user in admins:
            return True
        groups = [entry for entry in admins if SLACK_USERGROUP_ID.fullmatch(entry)]
        return bool(groups) and self.approvers.in_any_group(user, groups)

    def check_admin(self, user: str) -> None:
        """Raise NotAllowed unless ``user`` is an admin (the lock, the command line)."""
        if not self.is_admin(user):
            raise NotAllowed(f"<@{user}> is not an admin of debug-access (the policy's `admins`).")
