"""expire: ``pending_ttl`` passed with no decision, so the request expires (PENDING -> EXPIRED)
and nothing is issued. Due at ``pending_until`` (``bot.lifecycle.due``); a late decision calls
it too."""

from __future__ import annotations

from sqlmodel import col

from bot.audit import AuditAction, append_event
from bot.domain.requests import RequestStatus
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges
from bot.lifecycle.rows import load_request
from bot.lifecycle.views import Views
from bot.store.claims import move_request
from bot.store.db import transaction
from bot.store.models import AccessRequest


class ExpirePending:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def expire_pending(self, request_id: int) -> bool:
        """``pending_ttl`` passed with no decision: the request expires, nothing is issued."""
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            if not move_request(
                session,
                request_id,
                RequestStatus.EXPIRED,
                now,
                col(AccessRequest.pending_until) <= now,
            ):
                return False
            request = load_request(session, request_id)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.REQUEST_EXPIRED,
                request_id=request_id,
                resource=request.resource,
            )
            view = self.views.view(session, request)
        self.tell.refresh_request_messages(view)
        self.edges.notifier.tell(
            view.requester,
            f"Your {view.label.lower()} for `{view.resource}` "
            "expired before anyone decided. Nothing was issued; ask again if you "
            "still need it.",
        )
        self.tell.announce(view, AuditAction.REQUEST_EXPIRED, "expired unanswered")
        return True
