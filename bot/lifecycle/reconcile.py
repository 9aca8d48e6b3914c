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

from bot.domain.requests import RequestStatus
from bot.lifecycle.edges import Edges, EndReason
from bot.lifecycle.escalate import ESCALATION_EXHAUSTED, Escalate
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import COLLECT_MARGIN, Issue
from bot.lifecycle.revoke import CLAIM_TIMEOUT, EndGrant
from bot.lifecycle.views import Views
from bot.store.models import AccessRequest, Grant, GrantStatus, utc

log = logging.getLogger(__name__)

INTERRUPTED = "the bot stopped while issuing; please request again"


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
    ) -> None:
        self.edges = edges
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

    def _catch_up(self, at_start: bool) -> dict[str, int]:
        now = self.edges.clock.now()
        counts = {"expired": 0, "scheduled": 0, "retried": 0, "interrupted": 0, "pending": 0}
        stale = now - CLAIM_TIMEOUT

        def load_grants() -> list[Grant]:
            with Session(self.edges.engine) as session:
                return list(
                    session.exec(
                        select(Grant).where(
                            col(Grant.status).in_(
                                [GrantStatus.ISSUING, GrantStatus.ACTIVE, GrantStatus.REVOKING]
                            )
                        )
                    )
                )

        with Session(self.edges.engine) as session:
            approved = list(
                session.exec(
                    select(AccessRequest).where(
                        AccessRequest.status == RequestStatus.APPROVED.value
                    )
                )
            )
        granted = {grant.request_id for grant in load_grants()}

        def step(what: str, action: Callable[[], object]) -> None:
            try:
                action()
                counts[what] += 1
            except Exception:  # one bad row must not stop the others, nor the start
                log.exception("could not finish %s work", what)

        for request in approved:
            # Only requests nobody has touched for a while: another replica may be issuing.
            if request.id in granted or utc(request.updated_at) > stale:
                continue
            assert request.id is not None
            view = self.views.get(request.id)
            if view.is_extension:
                step("interrupted", partial(self.extension.apply, view))
            else:
                step("interrupted", partial(self.issuing.fail, view, None, INTERRUPTED))
        # Read grants again: finishing a stranded extension above may have moved an expiry.
        for grant in load_grants():
            gid = grant.id
            assert gid is not None
            if grant.status == GrantStatus.ISSUING:
                if utc(grant.issued_at) <= stale:
                    step(
                        "interrupted",
                        partial(
                            self.issuing.fail, self.views.get(grant.request_id), gid, INTERRUPTED
                        ),
                    )
            elif grant.status == GrantStatus.REVOKING:
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
