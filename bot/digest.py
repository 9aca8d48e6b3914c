"""audit -> digest: gather the day's requests from the database, build the digest, post it.

Runs on the policy's cron schedule (``digest:``) and on ``debug-access digest --now``. Each
window is posted once, even with several replicas firing the same job: a row keyed on the
window's end is inserted before posting, and a second poster finds it taken.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from bot.audit import AuditAction, verify_chain
from bot.audit_export import verify_report_text
from bot.digest_schedule import DigestConfig, fire_time_for_run, window_for
from bot.domain.digest import (
    Approval,
    Digest,
    GivenUpNotice,
    LockRecord,
    RequestRecord,
    build_digest,
)
from bot.domain.digest_chart import CHART_DAYS, ResourceUse, usage_by_resource
from bot.domain.notices import NoticeKind
from bot.domain.requests import RequestStatus
from bot.policy import Policy
from bot.ports import Clock, Notifier
from bot.store.models import (
    AccessRequest,
    AuditEvent,
    Decision,
    DigestRun,
    Grant,
    GrantStatus,
    utc,
)
from bot.store.user_locks import all_standing

log = logging.getLogger(__name__)

# How far before a window a request may have been created and still matter to it: it can wait
# for approval (pending_ttl, at most a day in practice) and then be held (at most 24 h).
LOOKBACK = timedelta(hours=48)


def load_records(session: Session, window_start: datetime) -> list[RequestRecord]:
    """Every request that can matter to a window starting at ``window_start``: recent ones,
    anything still live, and unreviewed break-glass however old."""
    live = select(Grant.request_id).where(col(Grant.ended_at).is_(None))
    rows = list(
        session.exec(
            select(AccessRequest)
            .where(
                or_(
                    col(AccessRequest.created_at) >= window_start - LOOKBACK,
                    col(AccessRequest.id).in_(live),
                    (col(AccessRequest.break_glass).is_(True))
                    & col(AccessRequest.reviewed_by).is_(None),
                )
            )
            .order_by(col(AccessRequest.id))
        )
    )
    ids = [r.id for r in rows]
    decisions = list(
        session.exec(
            select(Decision)
            .where(col(Decision.request_id).in_(ids))
            .order_by(col(Decision.decided_at))
        )
    )
    grants: dict[int | None, Grant] = {
        g.request_id: g for g in session.exec(select(Grant).where(col(Grant.request_id).in_(ids)))
    }
    return [
        _record(row, [d for d in decisions if d.request_id == row.id], grants.get(row.id))
        for row in rows
        if row.kind == "access"
    ]


def _record(
    row: AccessRequest, decisions: Iterable[Decision], grant: Grant | None
) -> RequestRecord:
    assert row.id is not None
    decided = row.decided_at
    if decided is None and row.status in {
        RequestStatus.EXPIRED.value,
        RequestStatus.WITHDRAWN.value,
    }:
        decided = row.updated_at
    approvals = tuple(
        Approval(d.approver, utc(d.decided_at)) for d in decisions if d.verdict == "approve"
    )
    denied_by = next((d.approver for d in decisions if d.verdict == "deny"), None)
    return RequestRecord(
        request_id=row.id,
        requester=row.requester,
        resource=row.resource,
        reason=row.reason,
        duration_asked=timedelta(seconds=row.duration_seconds),
        status=row.status,
        created_at=utc(row.created_at),
        approvals=approvals,
        denied_by=denied_by,
        decided_at=utc(decided) if decided else None,
        break_glass=row.break_glass,
        reviewed_by=row.reviewed_by,
        issued_at=utc(grant.issued_at) if grant else None,
        expires_at=utc(grant.expires_at) if grant and grant.expires_at else None,
        ended_at=utc(grant.ended_at) if grant and grant.ended_at else None,
        end_reason=grant.end_reason if grant else None,
        revoke_attempts=grant.revoke_attempts if grant else 0,
        revoke_failed=bool(
            grant
            and grant.ended_at is None
            and grant.revoke_attempts > 0
            and grant.status == GrantStatus.REVOKING
        ),
    )


def load_given_up(session: Session, start: datetime, end: datetime) -> list[GivenUpNotice]:
    """The DMs the notice outbox gave up on in ``[start, end)``, read from the audit trail (the
    record of it; the notice row keeps only Slack's message). Notices of other kinds were for
    the audit channel or a re-render: nobody in particular went untold."""
    events = session.exec(
        select(AuditEvent).where(
            AuditEvent.action == AuditAction.NOTICE_GIVEN_UP,
            col(AuditEvent.at) >= start,
            col(AuditEvent.at) < end,
        )
    )
    found = []
    for event in events:
        details = json.loads(event.details)
        if details.get("kind") != NoticeKind.DM:
            continue
        found.append(
            GivenUpNotice(
                recipient=str(details.get("recipient")),
                reason=str(details.get("reason")),
                at=utc(event.at),
                request_id=event.request_id,
            )
        )
    return found


class DailyDigest:
    """Build and post the digest for the window ending at the scheduled time."""

    def __init__(self, engine: Engine, policy: Policy, notifier: Notifier, clock: Clock) -> None:
        self.engine = engine
        self.policy = policy
        self.notifier = notifier
        self.clock = clock
        self.config = policy.digest or DigestConfig()

    def build(self, window_end: datetime) -> Digest:
        start, end = window_for(window_end)
        with Session(self.engine) as session:
            records = load_records(session, start)
            report = verify_chain(session)
            locks = [
                LockRecord(lock.user, lock.locked_by, lock.reason, utc(lock.locked_at))
                for lock in all_standing(session)
            ]
            given_up = load_given_up(session, start, end)
        return build_digest(
            records,
            window_start=start,
            window_end=end,
            now=self.clock.now(),
            chain_ok=report.ok,
            chain_problem=None if report.ok else verify_report_text(report),
            tz=self.config.zone,
            working_hours=self.config.hours,
            locks=locks,
            given_up=given_up,
        )

    def usage(self, window_end: datetime) -> list[ResourceUse]:
        """What the chart shows: grants by resource over the ``CHART_DAYS`` before the end."""
        since = window_end - timedelta(days=CHART_DAYS)
        with Session(self.engine) as session:
            records = load_records(session, since)
        return usage_by_resource(records, since, self.clock.now())

    def run(self, now: bool = False) -> bool:
        """Post the digest due now (``now=True``: for the 24 h up to this moment). Returns False
        when this window was already posted (another replica, or a repeated run)."""
        ran_at = self.clock.now()
        window_end = ran_at if now else fire_time_for_run(self.config, ran_at)
        if not now and not self._claim(window_end):
            log.info("digest for the window ending %s was already posted", window_end)
            return False
        digest = self.build(window_end)
        if not self.notifier.post_digest(digest, usage=lambda: self.usage(window_end)):
            if not now:
                self._release(window_end)  # let a later run (or another replica) try again
            return False
        log.info("posted the digest for %s .. %s", *window_for(window_end))
        return True

    def _release(self, window_end: datetime) -> None:
        with Session(self.engine) as session:
            for run in session.exec(select(DigestRun).where(DigestRun.window_end == window_end)):
                session.delete(run)
            session.commit()

    def _claim(self, window_end: datetime) -> bool:
        with Session(self.engine) as session:
            session.add(DigestRun(window_end=window_end, posted_at=self.clock.now()))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                return False
        return True
