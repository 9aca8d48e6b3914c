"""decision: approve, deny, withdraw, escalate, expire unanswered, review break-glass.

Every decision starts by locking the request row (an UPDATE guarded by ``status = 'pending'``),
so concurrent clicks are serialised: of two simultaneous Approve clicks on a one-approval
request exactly one issues, and on a two-approval request both count, once each.
"""

from __future__ import annotations

import json

from sqlalchemy import or_
from sqlmodel import col, select

from bot.audit import AuditAction, append_event
from bot.domain.approvals import tally_after
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.permissions import check_may_decide
from bot.domain.requests import RequestStatus
from bot.lifecycle.base import SYSTEM_ACTOR, LifecycleBase, MessageKind
from bot.ports import RequestView
from bot.store.claims import claim, move_request, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest, Decision

# escalation_level once every tier has been asked (far beyond any real number of tiers).
ESCALATION_EXHAUSTED = 1000


class DecideMixin(LifecycleBase):
    def decide(self, request_id: int, actor: str, approve: bool) -> RequestView:
        """Record an approver's verdict; when enough approvals are in, issue (or extend)."""
        current = self.get(request_id)
        if current.break_glass:
            raise Conflict(
                "Break-glass access needs no approval; use Reviewed once you have looked at it."
            )
        resource = self._resource(current.resource)
        now = self.clock.now()
        allowed = self.approvers.may_approve(actor, resource.approvers, current.requester, now)
        check_may_decide(actor, current.requester, [actor] if allowed else [])
        if (
            current.status is RequestStatus.PENDING
            and current.pending_until is not None
            and current.pending_until <= now
        ):
            self.expire_pending(request_id)  # its timer is late or lost: expire it now
            raise Conflict(f"Request #{request_id} waited too long and has expired.")
        with transaction(self.engine) as session:
            locked = claim(
                session,
                AccessRequest,
                request_id,
                request_in(RequestStatus.PENDING),
                # A late or lost expiry timer must not let an expired request through.
                or_(
                    col(AccessRequest.pending_until).is_(None),
                    col(AccessRequest.pending_until) > now,
                ),
                updated_at=now,
            )
            if not locked:
                raise self._already_decided(request_id)
            request = self._request(session, request_id)
            earlier = list(session.exec(select(Decision).where(Decision.request_id == request_id)))
            if any(d.approver == actor for d in earlier):
                raise Conflict(f"You already decided on request #{request_id}.")
            session.add(
                Decision(
                    request_id=request_id,
                    approver=actor,
                    verdict="approve" if approve else "deny",
                    decided_at=now,
                )
            )
            complete = False
            details: dict[str, object] = {}
            if approve:
                tally = tally_after(
                    [d.approver for d in earlier if d.verdict == "approve"],
                    actor,
                    request.approvals_required,
                )
                complete = tally.complete
                details = {"progress": tally.progress} if tally.progress else {}
            if complete or not approve:
                target = RequestStatus.APPROVED if approve else RequestStatus.DENIED
                self._move(session, request_id, target, now, decided_by=actor, decided_at=now)
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.APPROVED if approve else AuditAction.DENIED,
                request_id=request_id,
                resource=current.resource,
                details=details,
            )
            view = self._view(session, self._request(session, request_id))
        if view.status is not RequestStatus.PENDING:
            self.timers.cancel_pending(request_id)
        self._refresh_request_messages(view)
        if not approve:
            self._announce(view, AuditAction.DENIED, f"denied by <@{actor}>")
            self.notifier.tell(
                view.requester,
                f"<@{actor}> denied your {view.label.lower()} "
                f"for `{view.resource}`. Nothing was issued.",
            )
            return view
        progress = f" ({details['progress']})" if details else ""
        # A complete approval goes straight on to issuing (or extending), which announces again
        # and refreshes the Homes then.
        self._announce(
            view, AuditAction.APPROVED, f"approved by <@{actor}>{progress}", homes=not complete
        )
        if not complete:
            return view
        if view.is_extension:
            return self._apply_extension(view)
        return self._issue(view)

    def _already_decided(self, request_id: int) -> UserError:
        view = self.get(request_id)
        if view.decided_by:
            return Conflict(
                f"Request #{request_id} was already {view.status.label} "
                f"(decided by <@{view.decided_by}>)."
            )
        return Conflict(
            f"Request #{request_id} is {view.status.label}; it can no longer be decided."
        )

    def withdraw(self, view: RequestView) -> RequestView:
        """The requester takes back a request nobody has decided yet."""
        now = self.clock.now()
        with transaction(self.engine) as session:
            if not move_request(session, view.id, RequestStatus.WITHDRAWN, now):
                raise self._already_decided(view.id)
            append_event(
                session,
                at=now,
                actor=view.requester,
                action=AuditAction.WITHDRAWN,
                request_id=view.id,
                resource=view.resource,
            )
            withdrawn = self._view(session, self._request(session, view.id))
        self.timers.cancel_pending(view.id)
        self._refresh_request_messages(withdrawn)
        self._announce(withdrawn, AuditAction.WITHDRAWN, "withdrawn by the requester")
        return withdrawn

    def review(self, request_id: int, actor: str) -> RequestView:
        """An approver marks break-glass access as reviewed (who and when are recorded)."""
        view = self.get(request_id)
        if not view.break_glass:
            raise Conflict(f"Request #{request_id} is not break-glass access.")
        resource = self._resource(view.resource)
        now = self.clock.now()
        if actor == view.requester or not self.approvers.may_approve(
            actor, resource.approvers, view.requester, now
        ):
            raise NotAllowed(
                "Only an approver of this resource (not the requester) can review "
                "break-glass access."
            )
        with transaction(self.engine) as session:
            unreviewed = col(AccessRequest.reviewed_by).is_(None)
            if not claim(
                session, AccessRequest, request_id, unreviewed, reviewed_by=actor, reviewed_at=now
            ):
                who = self._request(session, request_id).reviewed_by
                raise Conflict(f"Already reviewed by <@{who}>.")
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.REVIEWED,
                request_id=request_id,
                resource=view.resource,
            )
            reviewed = self._view(session, self._request(session, request_id))
        self._refresh_request_messages(reviewed)
        self._announce(reviewed, AuditAction.REVIEWED, f"break-glass reviewed by <@{actor}>")
        return reviewed

    def escalate(self, request_id: int) -> bool:
        """Nobody decided within ``escalate_after``: ask the next approver tier too."""
        view = self.get(request_id)
        if view.status is not RequestStatus.PENDING:
            return False
        if view.escalation_level >= ESCALATION_EXHAUSTED:
            return False
        resource = self._resource(view.resource)
        level = view.escalation_level + 1
        now = self.clock.now()
        try:
            staffed, _note = self._tiers(view.resource, resource, view.requester, now)
        except UserError:
            staffed = []
        # The next source not asked yet. Not staffed[level]: an earlier tier may have emptied
        # since (PagerDuty went down), and indexing would then skip a tier.
        remaining = [t for t in staffed if t.source not in view.asked_sources]
        if not remaining:
            # Nobody further to ask: mark escalation as done, so the minute sweep does not ask
            # the sources again and again until the request expires.
            with transaction(self.engine) as session:
                claim(
                    session,
                    AccessRequest,
                    request_id,
                    col(AccessRequest.escalation_level) == view.escalation_level,
                    escalation_level=ESCALATION_EXHAUSTED,
                )
            return False
        tier = remaining[0]
        new_users = tuple(u for u in tier.users if u not in view.approvers)
        asked = [*view.approvers, *new_users]
        note = (
            f"escalated to {', '.join(f'<@{u}>' for u in new_users) or 'the next tier'} "
            "(no decision in time)"
        )
        with transaction(self.engine) as session:
            if not claim(
                session,
                AccessRequest,
                request_id,
                request_in(RequestStatus.PENDING),
                col(AccessRequest.escalation_level) == view.escalation_level,
                escalation_level=level,
                asked=json.dumps(asked),
                asked_sources=json.dumps([*view.asked_sources, tier.source]),
                routing_note="; ".join(filter(None, [view.routing_note, note])),
            ):
                return False
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.ESCALATED,
                request_id=request_id,
                resource=view.resource,
                details={"level": level, "asked": list(new_users), "source": tier.source},
            )
            escalated = self._view(session, self._request(session, request_id))
        refs = self.notifier.announce_request(escalated, new_users, in_channel=False)
        self._remember_messages(request_id, MessageKind.APPROVAL, refs)
        self._refresh_request_messages(escalated)
        self._announce(escalated, AuditAction.ESCALATED, note)
        if resource.escalate_after is not None and len(remaining) > 1:
            self.timers.schedule_escalation(request_id, now + resource.escalate_after)
        return True

    def expire_pending(self, request_id: int) -> bool:
        """``pending_ttl`` passed with no decision: the request expires, nothing is issued."""
        now = self.clock.now()
        with transaction(self.engine) as session:
            if not move_request(
                session,
                request_id,
                RequestStatus.EXPIRED,
                now,
                col(AccessRequest.pending_until) <= now,
            ):
                return False
            request = self._request(session, request_id)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.REQUEST_EXPIRED,
                request_id=request_id,
                resource=request.resource,
            )
            view = self._view(session, request)
        self._refresh_request_messages(view)
        self.notifier.tell(
            view.requester,
            f"Your {view.label.lower()} for `{view.resource}` "
            "expired before anyone decided. Nothing was issued; ask again if you "
            "still need it.",
        )
        self._announce(view, AuditAction.REQUEST_EXPIRED, "expired unanswered")
        return True
