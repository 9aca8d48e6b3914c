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
grant stuck issuing or delivering, a revocation whose claim went stale) is simply due work too,
so a restart needs no reconciling pass of its own.

Whether an approved-but-unfinished request is a crash's leftover is decided by ownership, not
age: the process issuing a request holds its lock (``Edges.locks``; on PostgreSQL an advisory
lock that dies with its process) from the approval through the delivery. The tick takes the
lock; when it gets it the owner is gone, and the leftover is resolved at once: an extension is
applied, anything else fails, with what was issued revoked (Vault confirming) and the requester
told through a notice. Credentials are never stored, so an undelivered grant cannot be
delivered later. There is no instant when an approved request is unowned and alive: the
approval (``Decide``) and a break-glass submission (``Submit``) take the lock before they commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_
from sqlalchemy.orm import Mapped
from sqlmodel import Session, col

from bot.audit import AuditAction, append_event
from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges, EndReason
from bot.lifecycle.escalate import ESCALATION_EXHAUSTED, Escalate
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import COLLECT_MARGIN, Issue
from bot.lifecycle.lock import LockUsers
from bot.lifecycle.notices import Notices
from bot.lifecycle.revoke import CLAIM_TIMEOUT, EndGrant
from bot.lifecycle.rows import grant_of, move
from bot.lifecycle.step_up import purge_links
from bot.lifecycle.views import Views
from bot.store.claims import grant_in, request_in
from bot.store.db import transaction
from bot.store.due import Table, at, seconds_between
from bot.store.models import AccessRequest, Grant
from bot.store.user_locks import requester_is_locked

log = logging.getLogger(__name__)

INTERRUPTED = "the bot stopped while issuing; please request again"
UNDELIVERED = "the bot stopped before they were sent"
ENDED_UNDELIVERED = "the grant ended before its credentials were delivered"
UNFINISHED = (GrantStatus.ISSUING, GrantStatus.DELIVERING)


class OwnedElsewhere(Exception):
    """Raised by a use case of due work when a live process owns the row (it holds the
    request's lock): the tick lets go of the row at once and looks again at its next tick,
    instead of holding it as it holds rows whose work failed."""


@dataclass(frozen=True)
class DueWork:
    """One kind of work the database says is due: which rows of ``table`` are due at a moment
    (``due``), which of them first (``oldest_first``), and what to do for one row (``run``,
    given its id; safe to call again, or on another replica, because it claims the row).

    ``guarded``: ``run`` holds the request's lock for as long as it works, and that lock dies
    with its process. Such work needs the tick's hold only briefly: were the replica killed
    mid-run, a long hold would keep the leftover waiting although its lock was already free."""

    name: str
    table: Table
    due: Callable[[datetime], ColumnElement[bool]]
    oldest_first: Mapped[Any]
    run: Callable[[int], object]
    guarded: bool = False


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
        notices: Notices,
        locking: LockUsers,
    ) -> None:
        self.edges = edges
        self.locking = locking
        self.notices = notices
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
                self.resolve_interrupted,
                guarded=True,
            ),
            DueWork(
                "interrupted issue",
                Grant,
                stranded_issue,
                col(Grant.issued_at),
                self.resolve_interrupted_grant,
                guarded=True,
            ),
            DueWork(
                "locked requester's grant",
                Grant,
                locked_grant,
                col(Grant.issued_at),
                self.locking.end_locked_grant,
            ),
            DueWork(
                "locked requester's request",
                AccessRequest,
                locked_pending,
                col(AccessRequest.created_at),
                self.locking.deny_pending,
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

    def also(self) -> tuple[tuple[str, Callable[[], int]], ...]:
        """Periodic work that claims its own rows, run after the due rows of every tick."""
        return (
            ("queued notices", self.send_queued_notices),
            ("step-up links purged", self.purge_step_up_links),
        )

    def purge_step_up_links(self) -> int:
        """Drop passkey links long used or expired, a batch per tick, so the table stays small."""
        return purge_links(self.edges.engine, self.edges.clock.now())

    def send_queued_notices(self) -> int:
        """Send the notices Slack refused earlier (the outbox); returns how many went out."""
        return self.notices.send_queued()

    def resolve_interrupted_grant(self, grant_id: int) -> bool:
        with Session(self.edges.engine) as session:
            grant = session.get(Grant, grant_id)
            request_id = grant.request_id if grant is not None else None
        return request_id is not None and self.resolve_interrupted(request_id)

    def resolve_interrupted(self, request_id: int) -> bool:
        """Resolve ``request_id`` if the process issuing it is gone (its lock is free); raise
        ``OwnedElsewhere`` while its owner is at it. True when it was resolved."""
        with self.edges.locks.hold(request_id) as orphaned:
            if not orphaned:
                raise OwnedElsewhere(f"request {request_id} is being issued")
            return self._resolve_orphan(request_id)

    def _resolve_orphan(self, request_id: int) -> bool:
        view = self.views.get(request_id)
        with Session(self.edges.engine) as session:
            grant = grant_of(session, request_id)
        if grant is None or grant.id is None:
            if view.status is not RequestStatus.APPROVED:
                return False
            if view.is_extension:
                self.extension.apply(view)
            else:
                # Stopped after the approval, before a grant was recorded: before asking Vault,
                # or just after Vault made the token (a kill lands anywhere). Which is not
                # known, so both sides hear that a token nobody holds may live, and until when.
                until = self.edges.clock.now() + view.duration
                self.issuing.fail(view, None, INTERRUPTED, token_may_live_until=until)
            log.warning("request %s was left approved by a stopped issue: resolved", request_id)
            return True
        if grant.status not in UNFINISHED:
            if view.status is not RequestStatus.APPROVED:
                return False
            # The grant ended (its expiry came first) before it was ever delivered.
            now = self.edges.clock.now()
            with transaction(self.edges.engine) as session:
                move(session, request_id, RequestStatus.FAILED, now, failure=ENDED_UNDELIVERED)
                append_event(
                    session,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action=AuditAction.FAILED,
                    request_id=request_id,
                    resource=view.resource,
                    details={"error": ENDED_UNDELIVERED},
                )
            return True
        if grant.status == GrantStatus.DELIVERING:
            problem, reason = UNDELIVERED, EndReason.DELIVERY_FAILED
        else:
            problem, reason = INTERRUPTED, EndReason.ISSUE_FAILED
        if view.status is RequestStatus.APPROVED:
            self.issuing.fail(view, grant.id, problem, reason)
        else:  # the request already ended some other way: just take back what was issued
            self.ending.end_grant(grant.id, reason)
        log.warning("grant %s was left %s by a stopped issue: revoked", grant.id, grant.status)
        return True

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
    """Approved, with no grant being issued or delivered (those are ``stranded_issue``'s):
    perhaps never issued. Whether its owner is gone is the lock's to say."""
    unfinished = exists().where(
        col(Grant.request_id) == col(AccessRequest.id), grant_in(*UNFINISHED)
    )
    return and_(request_in(RequestStatus.APPROVED), ~unfinished)


def stranded_issue(now: datetime) -> ColumnElement[bool]:
    """Issuing or delivering: perhaps left so by a stopped process (the lock says)."""
    return grant_in(*UNFINISHED)


def locked_grant(now: datetime) -> ColumnElement[bool]:
    """Active, and its requester is locked: the lock revoked the others; this one was delivered
    just after, or the process placing the lock stopped halfway."""
    locked_request = exists().where(
        col(AccessRequest.id) == col(Grant.request_id), requester_is_locked()
    )
    return and_(grant_in(GrantStatus.ACTIVE), locked_request)


def locked_pending(now: datetime) -> ColumnElement[bool]:
    """Waiting for a decision, and its requester is locked."""
    return and_(request_in(RequestStatus.PENDING), requester_is_locked())


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
