"""withdraw: the requester takes back a request nobody has decided yet (PENDING -> WITHDRAWN,
through the state machine like every other move)."""

from __future__ import annotations

from bot.audit import AuditAction, append_event
from bot.domain.requests import RequestStatus
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import Edges
from bot.lifecycle.rows import load_request
from bot.lifecycle.views import Views
from bot.ports import RequestView
from bot.store.claims import move_request
from bot.store.db import transaction


class Withdraw:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def withdraw(self, view: RequestView) -> RequestView:
        """The requester takes back a request nobody has decided yet."""
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            if not move_request(session, view.id, RequestStatus.WITHDRAWN, now):
                raise self.views.already_decided(view.id)
            append_event(
                session,
                at=now,
                actor=view.requester,
                action=AuditAction.WITHDRAWN,
                request_id=view.id,
                resource=view.resource,
            )
            withdrawn = self.views.view(session, load_request(session, view.id))
        self.tell.refresh_request_messages(withdrawn)
        self.tell.announce(withdrawn, AuditAction.WITHDRAWN, "withdrawn by the requester")
        return withdrawn
