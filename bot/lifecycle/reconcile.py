"""restart and sweep: rebuild timers from the database and finish whatever is overdue.

Timers are an optimisation; the database is the truth. ``reconcile`` runs at start (and
reschedules every future timer); ``sweep`` runs every minute on every replica and does only
what is overdue, so a lost timer (APScheduler's job store is not shared safely between
processes) or an unexpected error delays work by a minute, not until the next restart. Every
step claims its row atomically, so replicas sweeping together do each thing once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.requests import RequestStatus
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges, EndReason
from bot.lifecycle.escalate import ESCALATION_EXHAUSTED, Escalate
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import COLLECT_MARGIN, Issue
from bot.lifecycle.notices import Notices
from bot.lifecycle.revoke import CLAIM_TIMEOUT, EndGrant
from bot.lifecycle.rows import grant_of, move
from bot.lifecycle.views import Views
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant, GrantStatus, utc

log = logging.getLogger(__name__)

INTERRUPTED = "the bot stopped while issuing; please request again"
UNDELIVERED = "the bot stopped before they were sent"
ENDED_UNDELIVERED = "the grant ended before its credentials were delivered"


class Reconcile:
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
    ) -> None:
        self.edges = edges
        self.notices = notices
        self.views = views
        self.issuing = issuing
        self.extension = extension
        self.ending = ending
        self.expiry = expiry
        self.escalation = escalation

    def reconcile(self) -> dict[str, int]:
        """At start: finish what is overdue and set a timer for everything in the future."""
        counts = self._catch_up(at_start=True)
        log.info("reconciled at start: %s", counts)
        return counts

    def sweep(self) -> dict[str, int]:
        """Every minute: finish only what is overdue."""
        counts = self._catch_up(at_start=False)
        if any(counts.values()):
            log.info("sweep: %s", counts)
        return counts

    def resolve_undelivered(self, now: datetime) -> int:
        """Find approved requests whose issuing stopped half way (no grant yet, a grant ISSUING,
        or one DELIVERING whose credentials never reached the requester) and resolve each one
        whose owner is gone: an interrupted extension is applied; anything else fails, with
        what was issued revoked (Vault confirming) and the requester told through a notice.
        The credentials are never stored, so an undelivered grant cannot be delivered later:
        it is revoked, never left live with nobody told.

        Whether the owner is gone is the request's lock (``Edges.locks``): the issuing process
        holds it throughout, and it dies with that process, so this resolves a crash's leftovers
        at once (at start, or at the next sweep), and never takes work a live replica is doing.
        Returns how many requests it resolved. ``now`` is accepted for the integrator's tick.
        """
        del now  # ownership, not age, decides what is orphaned
        with Session(self.edges.engine) as session:
            approved = session.exec(
                select(AccessRequest.id).where(AccessRequest.status == RequestStatus.APPROVED.value)
            )
            undelivered = session.exec(
                select(Grant.request_id).where(
                    col(Grant.status).in_([GrantStatus.ISSUING, GrantStatus.DELIVERING])
                )
            )
            candidates = sorted({rid for rid in approved if rid is not None} | set(undelivered))
        resolved = 0
        for request_id in candidates:
            try:
                with self.edges.locks.hold(request_id) as orphaned:
                    if orphaned:  # else its owner is still at it
                        resolved += self._resolve_orphan(request_id)
            except Exception:  # one bad row (or lock) must not stop the others, nor the sweep
                log.exception("could not resolve interrupted request %s", request_id)
        return resolved

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
                self.issuing.fail(view, None, INTERRUPTED)
            log.warning("request %s was left approved by a stopped issue: resolved", request_id)
            return True
        if grant.status not in {GrantStatus.ISSUING, GrantStatus.DELIVERING}:
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

    def send_queued_notices(self) -> int:
        """Send the notices Slack refused earlier (the outbox); returns how many went out."""
        try:
            return self.notices.send_queued()
        except Exception:
            log.exception("could not send queued notices")
            return 0

    def _catch_up(self, at_start: bool) -> dict[str, int]:
        now = self.edges.clock.now()
        counts = {
            "expired": 0,
            "scheduled": 0,
            "retried": 0,
            "interrupted": 0,
            "pending": 0,
            "notices": 0,
        }

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
                counts[what] += 1
            except Exception:  # one bad row must not stop the others, nor the start
                log.exception("could not finish %s work", what)

        # Half-issued work first: it may hold live credentials nobody has.
        counts["interrupted"] = self.resolve_undelivered(now)
        with Session(self.edges.engine) as session:
            grants = list(
                session.exec(
                    select(Grant).where(
                        col(Grant.status).in_([GrantStatus.ACTIVE, GrantStatus.REVOKING])
                    )
                )
            )
        for grant in grants:
            gid = grant.id
            assert gid is not None
            if grant.status == GrantStatus.REVOKING:
                self._catch_up_revoking(grant, now, at_start, step)
            elif grant.expires_at is None or utc(grant.expires_at) <= now:
                step("expired", partial(self.ending.end_grant, gid, EndReason.EXPIRED))
            else:
                if at_start:
                    self.edges.timers.schedule_end(gid, utc(grant.expires_at))
                    counts["scheduled"] += 1
                self._catch_up_collection(grant, now, at_start)
        with Session(self.edges.engine) as session:
            pending = list(
                session.exec(
                    select(AccessRequest).where(AccessRequest.status == RequestStatus.PENDING.value)
                )
            )
        for request in pending:
            try:
                self._catch_up_pending(request, now, at_start, step, counts)
            except Exception:
                log.exception("could not catch up pending request %s", request.id)
        counts["notices"] = self.send_queued_notices()
        return counts

    def _catch_up_collection(self, grant: Grant, now: datetime, at_start: bool) -> None:
        """Wrapped credentials must be unwrapped before their token expires; check on time."""
        if grant.id is None or grant.collect_by is None or grant.collected is not None:
            return
        check_at = utc(grant.collect_by) - COLLECT_MARGIN
        if check_at <= now:
            try:
                self.issuing.check_collected(grant.id)
            except Exception:
                log.exception("could not check whether grant %s was collected", grant.id)
        elif at_start:
            self.edges.timers.schedule_collect_check(grant.id, check_at)

    def _catch_up_revoking(
        self,
        grant: Grant,
        now: datetime,
        at_start: bool,
        step: Callable[[str, Callable[[], object]], None],
    ) -> None:
        gid = grant.id
        assert gid is not None
        claimed = utc(grant.claimed_at) if grant.claimed_at else None
        if claimed is not None and claimed > now - CLAIM_TIMEOUT:
            if at_start:
                self.edges.timers.schedule_retry(gid, claimed + CLAIM_TIMEOUT)
            return
        retry_at = utc(grant.next_retry_at) if grant.next_retry_at else now
        if retry_at <= now or at_start:
            step(
                "retried", lambda: self.ending.end_grant(gid, grant.end_reason or EndReason.EXPIRED)
            )

    def _catch_up_pending(
        self,
        request: AccessRequest,
        now: datetime,
        at_start: bool,
        step: Callable[[str, Callable[[], object]], None],
        counts: dict[str, int],
    ) -> None:
        rid = request.id
        assert rid is not None
        until = utc(request.pending_until) if request.pending_until else now
        if until <= now:
            step("pending", lambda: self.expiry.expire_pending(rid))
            return
        resource = self.edges.policy.resource(request.resource)
        due = None
        if (
            resource is not None
            and resource.escalate_after is not None
            and request.escalation_level < ESCALATION_EXHAUSTED
        ):
            due = utc(request.created_at) + resource.escalate_after * (request.escalation_level + 1)
        if due is not None and due <= now and self.escalation.escalate(rid):
            counts["pending"] += 1
        if at_start:
            self.edges.timers.schedule_pending_expiry(rid, until)
            if due is not None and due > now:
                self.edges.timers.schedule_escalation(rid, due)
