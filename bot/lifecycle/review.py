"""review: an approver looks at break-glass access after the fact; who and when are recorded
once (the first reviewer claims the row)."""

from __future__ import annotations

from sqlmodel import col

from bot.audit import AuditAction, append_event
from bot.domain.errors import Conflict, NotAllowed
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import Edges
from bot.lifecycle.lock import check_not_locked, refuse_locked
from bot.lifecycle.rows import load_request
from bot.lifecycle.views import Views
from bot.ports import RequestView
from bot.store.claims import claim
from bot.store.db import transaction
from bot.store.models import AccessRequest


class Review:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def review(self, request_id: int, actor: str) -> RequestView:
        """An approver marks break-glass access as reviewed (who and when are recorded)."""
        view = self.views.get(request_id)
        if not view.break_glass:
            raise Conflict(f"Request #{request_id} is not break-glass access.")
        resource = self.edges.resource(view.resource)
        now = self.edges.clock.now()
        if actor == view.requester or not self.edges.approvers.may_approve(
            actor, resource.approvers, view.requester, now
        ):
            raise NotAllowed(
                "Only an approver of this resource (not the requester) can review "
                "break-glass access."
            )
        refuse_locked(self.edges, actor, "review access")
        with transaction(self.edges.engine) as session:
            unreviewed = col(AccessRequest.reviewed_by).is_(None)
            if not claim(
                session, AccessRequest, request_id, unreviewed, reviewed_by=actor, reviewed_at=now
            ):
                who = load_request(session, request_id).reviewed_by
                raise Conflict(f"Already reviewed by <@{who}>.")
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.REVIEWED,
                request_id=request_id,
                resource=view.resource,
            )
            # Again after the append, which queues behind a lock being placed (as in Decide).
            check_not_locked(session, actor, "review access")
            reviewed = self.views.view(session, load_request(session, request_id))
        self.tell.refresh_request_messages(reviewed)
        self.tell.announce(reviewed, AuditAction.REVIEWED, f"break-glass reviewed by <@{actor}>")
        return reviewed
