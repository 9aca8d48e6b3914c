"""decision: an approver approves or denies; enough approvals go on to issue (or extend).

Every decision starts by claiming the request row while it is still pending and unexpired,
so concurrent clicks are serialised: of two simultaneous Approve clicks on a one-approval
request exactly one issues, and on a two-approval request both count, once each.
"""

from __future__ import annotations

from contextlib import ExitStack

from sqlalchemy import or_
from sqlmodel import col, select

from bot.audit import AuditAction, append_event
from bot.domain.approvals import tally_after
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.permissions import check_may_decide, check_may_use_command_line
from bot.domain.requests import RequestStatus
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import Edges, Via, via_details, via_suffix
from bot.lifecycle.expire import ExpirePending
from bot.lifecycle.extend import ApplyExtension
from bot.lifecycle.issue import LOCK_WAIT, Issue
from bot.lifecycle.lock import check_not_locked, refuse_locked
from bot.lifecycle.rows import load_request, move
from bot.lifecycle.views import Views
from bot.logs import log_context
from bot.metrics import APPROVAL_WAIT
from bot.ports import RequestView
from bot.store.claims import claim, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest, Decision
from bot.store.user_locks import locked_among


class Decide:
    def __init__(
        self,
        edges: Edges,
        views: Views,
        tell: Announcer,
        issuing: Issue,
        extension: ApplyExtension,
        expiry: ExpirePending,
    ) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell
        self.issuing = issuing
        self.extension = extension
        self.expiry = expiry

    def decide(
        self,
        request_id: int,
        actor: str,
        approve: bool,
        *,
        via: str = Via.SLACK,
        stepped_up: bool = False,
    ) -> RequestView:
        """Record an approver's verdict; when enough approvals are in, issue (or extend).

        ``via``: where the approver acted; from the command line (``Via.CLI``) the actor must
        also be an admin, and the audit event and post say so.

        ``stepped_up`` says the approver confirmed with their passkey (``bot.lifecycle.step_up``
        passes it after verifying the assertion). An approval from Slack of a resource whose
        policy asks for step-up is refused without it, whatever path it came by: a taken-over
        Slack session alone cannot approve. Denying needs no step-up (it grants nothing). The
        command line needs none: shell access to the bot's environment is its trust boundary.

        Announcements wait until the end (``Announcer.deferred``): after the credentials DM,
        and after the request's lock is let go."""
        with log_context(request_id=request_id), self.tell.deferred(), ExitStack() as owned:
            return self._decide(request_id, actor, approve, owned, via, stepped_up)

    def _decide(
        self,
        request_id: int,
        actor: str,
        approve: bool,
        owned: ExitStack,
        via: str,
        stepped_up: bool,
    ) -> RequestView:
        if via == Via.CLI:
            check_may_use_command_line(actor, self.edges.is_admin(actor))
        current = self.views.get(request_id)
        if current.break_glass:
            raise Conflict(
                "Break-glass access needs no approval; use Reviewed once you have looked at it."
            )
        if (
            approve
            and self.edges.policy.approval_step_up(current.resource) is not None
            and via != Via.CLI  # the one exemption (with its admin check above)
            and not stepped_up
        ):
            raise NotAllowed(
                f"Approving `{current.resource}` needs your passkey: use the link the bot sends "
                "when you click Approve."
            )
        resource = self.edges.resource(current.resource)
        now = self.edges.clock.now()
        allowed = self.edges.approvers.may_approve(
            actor, resource.approvers, current.requester, now
        )
        check_may_decide(actor, current.requester, [actor] if allowed else [])
        refuse_locked(self.edges, actor, "approve or deny requests")
        if (
            current.status is RequestStatus.PENDING
            and current.pending_until is not None
            and current.pending_until <= now
        ):
            self.expiry.expire_pending(request_id)  # due, not yet taken up: expire it now
            raise Conflict(f"Request #{request_id} waited too long and has expired.")
        with transaction(self.edges.engine) as session:
            locked = claim(
                session,
                AccessRequest,
                request_id,
                request_in(RequestStatus.PENDING),
                # An expiry not yet taken up by the timers must not let an expired request through.
                or_(
                    col(AccessRequest.pending_until).is_(None),
                    col(AccessRequest.pending_until) > now,
                ),
                updated_at=now,
            )
            if not locked:
                raise self.views.already_decided(request_id)
            request = load_request(session, request_id)
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
            details: dict[str, object] = via_details(via)
            approvers: list[str] = []
            gone: set[str] = set()
            if approve:
                # A locked approver's earlier approval no longer counts (their account may
                # have been taken over when they gave it).
                approvers = [d.approver for d in earlier if d.verdict == "approve"]
                gone = locked_among(session, approvers)
                tally = tally_after(
                    [a for a in approvers if a not in gone],
                    actor,
                    request.approvals_required,
                )
                complete = tally.complete
                if tally.progress:
                    details["progress"] = tally.progress
                if stepped_up:
                    details["step_up"] = "passkey"
            # The approval that completes a request goes on to issue it, and owns it from
            # before this commit until the credentials are delivered (``Issue`` re-enters the
            # lock): the timers never see it approved without an owner. Only the completing
            # approval holds it, never an approval's Slack calls.
            if complete and not owned.enter_context(
                self.edges.locks.hold(request_id, wait=LOCK_WAIT)
            ):
                raise Conflict(f"Request #{request_id} is busy right now; try again in a moment.")
            if complete or not approve:
                target = RequestStatus.APPROVED if approve else RequestStatus.DENIED
                move(session, request_id, target, now, decided_by=actor, decided_at=now)
            # The view first: the append holds the audit chain's head until the commit.
            view = self.views.view(session, load_request(session, request_id))
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.APPROVED if approve else AuditAction.DENIED,
                request_id=request_id,
                resource=current.resource,
                details=details,
            )
            # Again after the append: it queues behind a lock being placed (which appends too),
            # so a lock that committed while this approver was deciding is seen here, and their
            # decision (or an earlier approval counted above) is rolled back.
            check_not_locked(session, actor, "approve or deny requests")
            if approve and locked_among(session, approvers) - gone:
                raise Conflict(f"An approver of request #{request_id} was just locked; try again.")
        if complete or not approve:
            APPROVAL_WAIT.observe((now - current.created_at).total_seconds())
        self.tell.refresh_request_messages(view)
        if not approve:
            self.tell.announce(view, AuditAction.DENIED, f"denied by <@{actor}>{via_suffix(via)}")
            self.edges.notifier.tell(
                view.requester,
                f"<@{actor}> denied your {view.label.lower()} "
                f"for `{view.resource}`. Nothing was issued.",
            )
            return view
        progress = f" ({details['progress']})" if "progress" in details else ""
        # A complete approval goes straight on to issuing (or extending), which announces again
        # and refreshes the Homes then.
        self.tell.announce(
            view,
            AuditAction.APPROVED,
            f"approved by <@{actor}>{via_suffix(via)}{progress}",
            homes=not complete,
        )
        if not complete:
            return view
        if view.is_extension:
            return self.extension.apply(view)
        return self.issuing.issue(view)
