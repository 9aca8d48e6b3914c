"""escalate: nobody decided within ``escalate_after``, so the next approver tier is asked too.

Due ``escalate_after`` after the last tier was asked (``escalated_at``, or the request's creation),
while the request waits (``bot.lifecycle.due``). Each step claims
the row on its ``escalation_level``, so replicas escalating together do it once; when nobody is
left to ask, the level is set to ``ESCALATION_EXHAUSTED`` for good.
"""

from __future__ import annotations

import json

from sqlmodel import col

from bot.audit import AuditAction, append_event
from bot.domain.errors import UserError
from bot.domain.requests import RequestStatus
from bot.lifecycle.announce import Announcer, MessageKind
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges
from bot.lifecycle.lock import locked_now
from bot.lifecycle.routing import staffed_tiers
from bot.lifecycle.rows import load_request
from bot.lifecycle.views import Views
from bot.store.claims import claim, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest

# escalation_level once every tier has been asked (far beyond any real number of tiers).
ESCALATION_EXHAUSTED = 1000


class Escalate:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def escalate(self, request_id: int) -> bool:
        """Nobody decided within ``escalate_after``: ask the next approver tier too."""
        view = self.views.get(request_id)
        if view.status is not RequestStatus.PENDING:
            return False
        if view.escalation_level >= ESCALATION_EXHAUSTED:
            return False
        resource = self.edges.resource(view.resource)
        level = view.escalation_level + 1
        now = self.edges.clock.now()
        try:
            staffed, _note = staffed_tiers(
                self.edges.approvers,
                view.resource,
                resource,
                view.requester,
                now,
                locked_now(self.edges),
            )
        except UserError:
            staffed = []
        # The next source not asked yet. Not staffed[level]: an earlier tier may have emptied
        # since (PagerDuty went down), and indexing would then skip a tier.
        remaining = [t for t in staffed if t.source not in view.asked_sources]
        if not remaining:
            # Nobody further to ask: mark escalation as done, so it is no longer due and the
            # sources are not asked again and again until the request expires.
            with transaction(self.edges.engine) as session:
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
        with transaction(self.edges.engine) as session:
            if not claim(
                session,
                AccessRequest,
                request_id,
                request_in(RequestStatus.PENDING),
                col(AccessRequest.escalation_level) == view.escalation_level,
                escalation_level=level,
                escalated_at=now,
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
            escalated = self.views.view(session, load_request(session, request_id))
        refs = self.edges.notifier.announce_request(escalated, new_users, in_channel=False)
        self.tell.remember(request_id, MessageKind.APPROVAL, refs)
        self.tell.refresh_request_messages(escalated)
        self.tell.announce(escalated, AuditAction.ESCALATED, note)
        return True
