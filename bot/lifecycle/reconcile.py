"""restart: rebuild every timer from the database and finish what a crash interrupted."""

from __future__ import annotations

import logging

from sqlmodel import Session, col, select

from bot.domain.requests import RequestStatus
from bot.lifecycle.base import EndReason, LifecycleBase
from bot.lifecycle.grants import CLAIM_TIMEOUT, GrantMixin
from bot.store.models import AccessRequest, Grant, GrantStatus, utc

log = logging.getLogger(__name__)

INTERRUPTED = "the bot stopped while issuing; please request again"


class ReconcileMixin(GrantMixin, LifecycleBase):
    def reconcile(self) -> dict[str, int]:
        """Runs at start. Past-due grants are revoked now and future ones rescheduled; grants a
        crash left half-issued are revoked and their requests failed; pending requests get their
        escalation and expiry timers back (or expire now if their time passed)."""
        now = self.clock.now()
        counts = {"expired": 0, "scheduled": 0, "retried": 0, "interrupted": 0, "pending": 0}
        with Session(self.engine) as session:
            grants = list(session.exec(select(Grant).where(col(Grant.status).in_(
                [GrantStatus.ISSUING, GrantStatus.ACTIVE, GrantStatus.REVOKING]))))
            stranded = list(session.exec(select(AccessRequest).where(
                AccessRequest.status == RequestStatus.APPROVED.value)))
            pending = list(session.exec(select(AccessRequest).where(
                AccessRequest.status == RequestStatus.PENDING.value)))
        granted = {grant.request_id for grant in grants}
        for request in stranded:
            assert request.id is not None
            if request.id in granted:
                continue
            view = self.get(request.id)
            if view.is_extension:
                self._apply_extension(view)
            else:
                self._fail_issue(view, None, INTERRUPTED)
            counts["interrupted"] += 1
        for grant in grants:
            assert grant.id is not None
            if grant.status == GrantStatus.ISSUING:
                self._fail_issue(self.get(grant.request_id), grant.id, INTERRUPTED)
                counts["interrupted"] += 1
            elif grant.status == GrantStatus.REVOKING:
                claimed = utc(grant.claimed_at) if grant.claimed_at else None
                if claimed is None or claimed < now - CLAIM_TIMEOUT:
                    self.end_grant(grant.id, grant.end_reason or EndReason.EXPIRED)
                else:
                    self.timers.schedule_retry(grant.id, claimed + CLAIM_TIMEOUT)
                counts["retried"] += 1
            elif grant.expires_at is None or utc(grant.expires_at) <= now:
                self.end_grant(grant.id, EndReason.EXPIRED)
                counts["expired"] += 1
            else:
                self.timers.schedule_end(grant.id, utc(grant.expires_at))
                counts["scheduled"] += 1
        for request in pending:
            assert request.id is not None
            counts["pending"] += 1
            until = utc(request.pending_until) if request.pending_until else now
            if until <= now:
                self.expire_pending(request.id)
                continue
            self.timers.schedule_pending_expiry(request.id, until)
            resource = self.policy.resource(request.resource)
            if resource is not None and resource.escalate_after is not None:
                due = utc(request.created_at) + resource.escalate_after * (
                    request.escalation_level + 1)
                self.timers.schedule_escalation(request.id, max(due, now))
        log.info("reconciled at start: %s", counts)
        return counts
