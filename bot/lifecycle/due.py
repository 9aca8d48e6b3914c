"""due: what the database says must happen by now, and the use case that does it.

Nothing is scheduled per grant or per request. Every due time is already in a row: a grant
ends at ``expires_at``, a failed revocation is retried at ``next_retry_at``, wrapped
credentials are checked shortly before ``collect_by``, an unanswered request expires at
``pending_until`` and escalates ``escalate_after`` (of its resource) after the last tier was
asked (``escalated_at``). Each kind of due
work below is a condition on one table ("due at ``now``") and the use case that does it for
one row. The timer tick (``bot.scheduler``) asks each kind for its due rows every second or
two, on every replica, and claims them one at a time (``bot.store.due``); this module knows
nothing of how often, or how rows are claimed.

The conditions mirror the guards of the use cases they lead to, and those use cases still claim
their rows themselves: running one twice, late, or on two replicas at once does it once. A
crash is no special case either: what it interrupted (an approved request never issued, a
grant stuck issuing, a revocation whose claim went stale) is simply due work too, so a restart
needs no reconciling pass of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col

from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus
from bot.lifecycle.edges import Edges, EndReason
from bot.lifecycle.escalate import ESCALATION_EXHAUSTED, Escalate
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import COLLECT_MARGIN, Issue
from bot.lifecycle.revoke import CLAIM_TIMEOUT, EndGrant
from bot.lifecycle.views import Views
from bot.store.claims import grant_in, request_in
from bot.store.due import Table, at, seconds_between
from bot.store.models import AccessRequest, Grant

INTERRUPTED = "the bot stopped while issuing; please request again"


@dataclass(frozen=True)
class DueWork:
    """One kind of work the database says is due: which rows of ``table`` are due at a moment
    (``due``), which of them first (``oldest_first``), and what to do for one row (``run``,
    given its id; safe to call again, or on another replica, because it claims the row)."""

    name: str
    table: Table
    due: Callable[[datetime], ColumnElement[bool]]
    oldest_first: Mapped[Any]
    run: Callable[[int], object]


class Due:
    """The bot's due work, in the order a tick takes it up: what a crash interrupted first,
    then grants, then requests still waiting for a decision."""

    def __init__(
        self,
        edges: Edges,
        views: Views,
        issuing: Issue,
        extension: ApplyExtension,
        ending: EndGrant,
        expiry: ExpirePending,
        escalation: Escalate,
    ) -> None:
        self.edges = edges
        self.views = views
        self.issuing = issuing
        self.extension = extension
        self.ending = ending
        self.expiry = expiry
        self.escalation = escalation

    def work(self) -> tuple[DueWork, ...]:
        return (
            DueWork(
                "interrupted approval",
                AccessRequest,
                stranded_approval,
                col(AccessRequest.updated_at),
                self.finish_approval,
            ),
            DueWork(
                "interrupted issue",
                Grant,
                stranded_issue,
                col(Grant.issued_at),
                self.fail_issue,
            ),
            DueWork(
                "grant expiry",
                Grant,
                expired_grant,
                col(Grant.expires_at),
                lambda grant_id: self.ending.end_grant(grant_id, EndReason.EXPIRED),
            ),
            DueWork(
                "revocation retry",
                Grant,
                revocation_retry,
                col(Grant.next_retry_at),
                # The reason the revocation started with is kept; EXPIRED only fills a gap.
                lambda grant_id: self.ending.end_grant(grant_id, EndReason.EXPIRED),
            ),
            DueWork(
                "collection check",
                Grant,
                collection_check,
                col(Grant.collect_by),
                self.issuing.check_collected,
            ),
            DueWork(
                "pending expiry",
                AccessRequest,
                pending_expiry,
                col(AccessRequest.pending_until),
                self.expiry.expire_pending,
            ),
            DueWork(
                "escalation",
                AccessRequest,
                self.escalation_due,
                col(AccessRequest.created_at),
                self.escalation.escalate,
            ),
        )

    def finish_approval(self, request_id: int) -> None:
        """An approved request nobody went on with (the bot stopped between the approval and
        Vault): an extension is applied now; an access request fails (ask again), since the
        approver may no longer want it issued hours later."""
        view = self.views.get(request_id)
        if view.is_extension:
            self.extension.apply(view)
        else:
            self.issuing.fail(view, None, INTERRUPTED)

    def fail_issue(self, grant_id: int) -> None:
        """A grant left issuing by a crash: fail its request and revoke what Vault issued."""
        with Session(self.edges.engine) as session:
            grant = session.get(Grant, grant_id)
            request_id = grant.request_id if grant is not None else None
        if request_id is not None:
            self.issuing.fail(self.views.get(request_id), grant_id, INTERRUPTED)

    def escalation_due(self, now: datetime) -> ColumnElement[bool]:
        """Still waiting, not expired, not out of tiers, and ``escalate_after`` of its resource
        (as the policy says now) passed since the last tier was asked."""
        asked = func.coalesce(col(AccessRequest.escalated_at), col(AccessRequest.created_at))
        waited = seconds_between(asked, at(now))
        per_resource = [
            and_(
                col(AccessRequest.resource) == name,
                waited >= resource.escalate_after.total_seconds(),
            )
            for name, resource in self.edges.policy.resources.items()
            if resource.escalate_after is not None
        ]
        if not per_resource:
            return false()
        return and_(
            request_in(RequestStatus.PENDING),
            col(AccessRequest.escalation_level) < ESCALATION_EXHAUSTED,
            or_(col(AccessRequest.pending_until).is_(None), col(AccessRequest.pending_until) > now),
            or_(*per_resource),
        )


def stranded_approval(now: datetime) -> ColumnElement[bool]:
    """Approved, untouched for longer than an issue can take, and with no grant in progress."""
    live = exists().where(
        col(Grant.request_id) == col(AccessRequest.id),
        grant_in(GrantStatus.ISSUING, GrantStatus.ACTIVE, GrantStatus.REVOKING),
    )
    return and_(
        request_in(RequestStatus.APPROVED),
        col(AccessRequest.updated_at) <= now - CLAIM_TIMEOUT,
        ~live,
    )


def stranded_issue(now: datetime) -> ColumnElement[bool]:
    """Issuing for longer than an issue can take: the replica that started it is gone."""
    return and_(grant_in(GrantStatus.ISSUING), col(Grant.issued_at) <= now - CLAIM_TIMEOUT)


def expired_grant(now: datetime) -> ColumnElement[bool]:
    """Active past its expiry."""
    expires = col(Grant.expires_at)
    return and_(grant_in(GrantStatus.ACTIVE), or_(expires.is_(None), expires <= now))


def revocation_retry(now: datetime) -> ColumnElement[bool]:
    """Being revoked, nobody's claim on it is fresh (its owner failed, or died), and its
    backoff is over: the same conditions under which ``EndGrant`` takes it up."""
    claimed, retry = col(Grant.claimed_at), col(Grant.next_retry_at)
    return and_(
        grant_in(GrantStatus.REVOKING),
        or_(claimed.is_(None), claimed < now - CLAIM_TIMEOUT),
        or_(retry.is_(None), retry <= now),
    )


def collection_check(now: datetime) -> ColumnElement[bool]:
    """Wrapped credentials not checked yet, whose wrapping token expires within the margin."""
    return and_(
        grant_in(GrantStatus.ACTIVE),
        col(Grant.wrap_accessor).is_not(None),
        col(Grant.collected).is_(None),
        col(Grant.collect_by) <= now + COLLECT_MARGIN,
    )


def pending_expiry(now: datetime) -> ColumnElement[bool]:
    """Still waiting for a decision at ``pending_until``."""
    return and_(request_in(RequestStatus.PENDING), col(AccessRequest.pending_until) <= now)
