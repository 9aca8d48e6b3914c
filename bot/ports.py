"""Small interfaces for the edges the lifecycle talks to: the clock, Slack and the approvers.

(The Vault edge is ``bot.issuer.Issuer``.) Each has one real implementation and can be replaced
by a fake in unit tests, so the use cases are tested without Slack, on-call services or wall
time. (Timers need no interface: due times are columns, see ``bot.lifecycle.due``.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.domain.digest import Digest
from bot.domain.digest_chart import ResourceUse
from bot.domain.requests import RequestStatus
from bot.issuer import SecretValue


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass(frozen=True)
class MessageRef:
    """Where a Slack message lives, so it can be updated later."""

    channel: str
    ts: str


@dataclass(frozen=True)
class RequestView:
    """A read-only snapshot of a request for rendering. Holds no secrets."""

    id: int
    requester: str
    resource: str
    description: str
    duration: timedelta
    reason: str
    status: RequestStatus
    created_at: datetime
    approvers: tuple[str, ...]
    decided_by: str | None = None
    decided_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    ended_by: str | None = None
    failure: str | None = None
    kind: str = "access"
    parent_id: int | None = None
    break_glass: bool = False
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    approved_by: tuple[str, ...] = ()
    approvals_required: int = 1
    escalation_level: int = 0
    asked_sources: tuple[str, ...] = ()
    routing_note: str | None = None
    pending_until: datetime | None = None
    #: The grant cannot be recalled early (an SSH certificate): it ends when it expires.
    ends_by_expiry_only: bool = False
    #: The SSH public key the grant signs (its fingerprint), for kinds that sign one.
    key_fingerprint: str | None = None

    @property
    def is_extension(self) -> bool:
        return self.kind == "extension"

    @property
    def label(self) -> str:
        """``Access request #42`` / ``Extension request #43`` / ``Break-glass access #44``."""
        if self.break_glass:
            return f"Break-glass access #{self.id}"
        return f"{'Extension' if self.is_extension else 'Access'} request #{self.id}"


@dataclass(frozen=True)
class CredentialDelivery:
    """What the requester receives. Exactly one of ``wrapping_token`` / ``values`` is set."""

    expires_at: datetime
    wrapping_token: SecretValue | None = None
    wrap_ttl: timedelta | None = None
    values: Mapping[str, SecretValue] | None = None
    notes: tuple[str, ...] = ()
    #: How to use what was delivered (written by the bot's grant kind; no user text).
    instructions: tuple[str, ...] = ()
    #: Each value alone in its own code block, copyable into a file as it is.
    verbatim: bool = False
    #: When the wrapping token was made (its TTL counts from then, not from the delivery).
    wrapped_at: datetime | None = None


class Notifier(Protocol):
    """Everything the lifecycle tells people. Implementations must not raise on Slack errors:
    state is already committed when they run, and a failed post is logged, not fatal."""

    def announce_request(
        self, view: RequestView, users: Sequence[str], in_channel: bool = True
    ) -> list[MessageRef]:
        """Post the request (with its buttons) to the approvals channel when ``in_channel``, and
        by DM to each of ``users``."""

    def refresh_request(self, view: RequestView, refs: Sequence[MessageRef]) -> None:
        """Update every copy of the request message to its current state."""

    def deliver_credentials(self, view: RequestView, delivery: CredentialDelivery) -> MessageRef:
        """DM the credentials to the requester alone. Raises DeliveryError if that failed."""

    def close_credentials(self, view: RequestView, ref: MessageRef) -> None:
        """Update the credentials DM once the grant ended (no more buttons)."""

    def tell(self, user: str, text: str) -> None:
        """DM one person a short plain message (``text`` is already mrkdwn-safe)."""

    def send(self, user: str, text: str) -> None:
        """As ``tell``, but raises DeliveryError when Slack did not take it (the outbox of
        notices retries it later)."""

    def audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        """Post a lifecycle event to the audit channel: as a reply in the request's ``thread``
        when there is one (``alert`` echoes it to the channel too), else as a new root message,
        whose ref is returned so later events can thread under it."""

    def post_audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        """As ``audit``, but raises DeliveryError when Slack did not take it (the outbox of
        notices posts it later). None when there is no audit channel or it was a reply."""

    def update_request(
        self,
        view: RequestView,
        approvals: Sequence[MessageRef],
        credentials: Sequence[MessageRef] = (),
    ) -> None:
        """Update every copy of the request message (``approvals``) to its current state and
        close the credentials DMs (``credentials``, once the grant ended); raises DeliveryError
        at the first Slack refuses (the outbox re-renders them all later)."""

    def home_changed(self, users: Sequence[str]) -> None:
        """Refresh the App Home of these users (their requests or queues changed)."""

    def post_digest(
        self, digest: Digest, usage: Callable[[], Sequence[ResourceUse]] | None = None
    ) -> bool:
        """Post the daily digest to the audit channel (on Slack: the main message, its thread,
        the CSV, then a chart of ``usage()``, skipped if it fails). False when the digest
        itself could not be posted."""


class DeliveryError(Exception):
    """A DM (the credentials, or a notice) could not be delivered. ``retry_after`` is how long
    Slack asked us to wait (its ``Retry-After``), when it said; ``code`` is Slack's error code
    (``user_not_found``…) when Slack answered, so the outbox can tell a refusal that will never
    change from one worth retrying."""

    def __init__(
        self, message: str, retry_after: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class WorkLocks(Protocol):
    """A lock per request, held by the process issuing it (``bot.store.locks``). Whoever takes
    a request's lock knows nobody else is issuing it: a lock dies with its holder."""

    def hold(self, key: int, wait: timedelta | None = None) -> AbstractContextManager[bool]:
        """Hold ``key``'s lock for the ``with`` block; yields whether it was got (waiting up to
        ``wait``; without it, only if free now). Re-entrant within a thread."""


@dataclass(frozen=True)
class ApproverTier:
    """One approver source's answer: who (other than the requester) can approve now."""

    source: str
    users: tuple[str, ...]
    note: str | None = None


class ApproverDirectory(Protocol):
    """Who may approve and who may ask, now. Static lists, rotations, PagerDuty and Slack user
    groups all answer through this, so the lifecycle never knows where people come from."""

    def tiers(self, entries: Sequence[str], requester: str, now: datetime) -> list[ApproverTier]:
        """Approver tiers in escalation order (first non-empty = primary), requester removed."""

    def may_approve(self, user: str, entries: Sequence[str], requester: str, now: datetime) -> bool:
        """Whether ``user`` is an approver at this moment (never the requester)."""

    def in_any_group(self, user: str, groups: Sequence[str]) -> bool:
        """Whether ``user`` is in one of these Slack user groups."""
