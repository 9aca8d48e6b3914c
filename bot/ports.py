"""Small interfaces for the edges the lifecycle talks to: the clock, Slack, and the timers.

(The Vault edge is ``bot.issuer.Issuer``.) Each has one real implementation and can be replaced
by a fake in unit tests, so the use cases are tested without Slack, a scheduler or wall time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

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


@dataclass(frozen=True)
class CredentialDelivery:
    """What the requester receives. Exactly one of ``wrapping_token`` / ``values`` is set."""

    expires_at: datetime
    wrapping_token: SecretValue | None = None
    wrap_ttl: timedelta | None = None
    values: Mapping[str, SecretValue] | None = None
    notes: tuple[str, ...] = ()


class Notifier(Protocol):
    """Everything the lifecycle tells people. Implementations must not raise on Slack errors:
    state is already committed when they run, and a failed post is logged, not fatal."""

    def announce_request(self, view: RequestView) -> list[MessageRef]:
        """Post the request with Approve/Deny to the approvals channel and each approver's DM."""

    def refresh_request(self, view: RequestView, refs: Sequence[MessageRef]) -> None:
        """Update every copy of the request message to its current state."""

    def deliver_credentials(self, view: RequestView, delivery: CredentialDelivery) -> MessageRef:
        """DM the credentials to the requester alone. Raises DeliveryError if that failed."""

    def close_credentials(self, view: RequestView, ref: MessageRef) -> None:
        """Update the credentials DM once the grant ended (no more buttons)."""

    def tell(self, user: str, text: str) -> None:
        """DM one person a short plain message (``text`` is already mrkdwn-safe)."""

    def audit(self, view: RequestView | None, action: str, text: str, alert: bool = False) -> None:
        """Post a lifecycle event to the audit channel; ``alert`` marks it as needing a human."""


class DeliveryError(Exception):
    """The credentials could not be delivered to the requester."""


class Timers(Protocol):
    """Wake-ups for grant expiry and revocation retries. The database stays the truth: timers
    can be lost and rebuilt by ``AccessLifecycle.reconcile``."""

    def schedule_end(self, grant_id: int, at: datetime) -> None: ...

    def schedule_retry(self, grant_id: int, at: datetime) -> None: ...
