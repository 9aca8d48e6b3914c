"""Reading requests as the Slack surfaces show them (``RequestView``): one request, someone's
open requests, what waits for an approver, recent decisions.

Every query here is bounded by what it shows, never by how many requests are pending or how many
grants are live: the App Home runs them for every affected user on every change, so work per
row of the backlog made every change O(backlog) and a burst O(backlog²) (measured in
``benchmarks/ack_burst.py``). A list of views costs three queries whatever its length
(``_views``: the rows, then their grants and approvals in one query each)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import exists, or_
from sqlmodel import Session, col, select

from bot.domain.errors import Conflict, UserError
from bot.domain.requests import RequestStatus
from bot.domain.ssh_keys import fingerprint_of
from bot.lifecycle.edges import Edges
from bot.lifecycle.rows import grant_of, load_request
from bot.ports import RequestView
from bot.store.models import AccessRequest, Decision, Grant, UserLock, utc


class Views:
    def __init__(self, edges: Edges) -> None:
        self.edges = edges

    def get(self, request_id: int) -> RequestView:
        with Session(self.edges.engine) as session:
            return self.view(session, load_request(session, request_id))

    def open_requests_of(self, user: str) -> list[RequestView]:
        """The user's pending requests and live grants, newest first."""
        open_states = [s.value for s in RequestStatus if s.is_open]
        with Session(self.edges.engine) as session:
            rows = session.exec(
                select(AccessRequest)
                .where(AccessRequest.requester == user, col(AccessRequest.status).in_(open_states))
                .order_by(col(AccessRequest.id).desc())
            )
            return self._views(session, list(rows))

    def listing(
        self, statuses: Sequence[RequestStatus] | None = None, limit: int = 200
    ) -> list[RequestView]:
        """Everyone's requests in ``statuses`` (None: any), newest first, at most ``limit``:
        what an admin on the command line looks through while Slack is down."""
        query = select(AccessRequest).order_by(col(AccessRequest.id).desc()).limit(limit)
        if statuses is not None:
            query = query.where(col(AccessRequest.status).in_([s.value for s in statuses]))
        with Session(self.edges.engine) as session:
            return self._views(session, list(session.exec(query)))

    def waiting_for(self, user: str, limit: int | None = None) -> list[RequestView]:
        """Pending requests this user may decide now and has not yet decided, oldest first (at
        most ``limit``).

        Who may approve is the policy's per resource (and never the requester), so the resources
        are settled first, once each, and the database is asked only for their pending requests
        that are not the user's and carry no decision of theirs."""
        now = self.edges.clock.now()
        resources = [
            name
            for name, resource in self.edges.policy.resources.items()
            if self.edges.approvers.may_approve(user, resource.approvers, "", now)
        ]
        if not resources:
            return []
        decided = exists().where(
            col(Decision.request_id) == col(AccessRequest.id), col(Decision.approver) == user
        )
        # A locked user approves nothing, so nothing waits for them (in the same statement).
        locked = exists().where(col(UserLock.user) == user, col(UserLock.lifted_at).is_(None))
        query = (
            select(AccessRequest)
            .where(
                AccessRequest.status == RequestStatus.PENDING.value,
                col(AccessRequest.resource).in_(resources),
                AccessRequest.requester != user,
                ~decided,
                ~locked,
            )
            .order_by(col(AccessRequest.id))
        )
        if limit is not None:
            query = query.limit(limit)
        with Session(self.edges.engine) as session:
            return self._views(session, list(session.exec(query)))

    def recent_decisions(self, user: str, limit: int = 5) -> list[RequestView]:
        """The latest decided requests this user asked for or decided."""
        with Session(self.edges.engine) as session:
            decided_ids = select(Decision.request_id).where(Decision.approver == user)
            rows = session.exec(
                select(AccessRequest)
                .where(
                    col(AccessRequest.decided_at).is_not(None),
                    or_(
                        col(AccessRequest.requester) == user, col(AccessRequest.id).in_(decided_ids)
                    ),
                )
                .order_by(col(AccessRequest.decided_at).desc())
                .limit(limit)
            )
            return self._views(session, list(rows))

    def _views(self, session: Session, requests: Sequence[AccessRequest]) -> list[RequestView]:
        """Views of ``requests`` with two more queries in all: their grants (an extension shows
        its parent's), and the approvals so far."""
        ids = [r.id for r in requests if r.id is not None]
        if not ids:
            return []
        grant_ids = {r.parent_id or r.id for r in requests}
        grants = {
            g.request_id: g
            for g in session.exec(select(Grant).where(col(Grant.request_id).in_(grant_ids)))
        }
        approvals: dict[int, list[str]] = {}
        for request_id, approver in session.exec(
            select(Decision.request_id, Decision.approver)
            .where(col(Decision.request_id).in_(ids), Decision.verdict == "approve")
            .order_by(col(Decision.decided_at), col(Decision.id))
        ):
            approvals.setdefault(request_id, []).append(approver)
        return [
            self._build(
                r,
                grants.get(r.parent_id or r.id),  # type: ignore[arg-type]
                tuple(approvals.get(r.id, ())),  # type: ignore[arg-type]
            )
            for r in requests
        ]

    def view(self, session: Session, request: AccessRequest) -> RequestView:
        assert request.id is not None
        grant = grant_of(session, request.parent_id or request.id)
        approved_by = tuple(
            session.exec(
                select(Decision.approver)
                .where(Decision.request_id == request.id, Decision.verdict == "approve")
                .order_by(col(Decision.decided_at), col(Decision.id))
            )
        )
        return self._build(request, grant, approved_by)

    def _build(
        self, request: AccessRequest, grant: Grant | None, approved_by: tuple[str, ...]
    ) -> RequestView:
        assert request.id is not None
        resource = self.edges.policy.resource(request.resource)
        return RequestView(
            id=request.id,
            requester=request.requester,
            resource=request.resource,
            description=resource.description if resource else "",
            duration=timedelta(seconds=request.duration_seconds),
            reason=request.reason,
            status=RequestStatus(request.status),
            created_at=utc(request.created_at),
            approvers=tuple(json.loads(request.asked or "[]")),
            decided_by=request.decided_by,
            decided_at=utc(request.decided_at) if request.decided_at else None,
            expires_at=utc(grant.expires_at) if grant and grant.expires_at else None,
            ended_at=utc(grant.ended_at) if grant and grant.ended_at else None,
            end_reason=grant.end_reason if grant else None,
            ended_by=grant.ended_by if grant else None,
            failure=request.failure,
            kind=request.kind,
            parent_id=request.parent_id,
            break_glass=request.break_glass,
            reviewed_by=request.reviewed_by,
            reviewed_at=utc(request.reviewed_at) if request.reviewed_at else None,
            approved_by=approved_by,
            approvals_required=request.approvals_required,
            escalation_level=request.escalation_level,
            routing_note=request.routing_note,
            asked_sources=tuple(json.loads(request.asked_sources or "[]")),
            pending_until=utc(request.pending_until) if request.pending_until else None,
            ends_by_expiry_only=resource is not None and not resource.grant.recallable,
            key_fingerprint=fingerprint_of(request.public_key) if request.public_key else None,
        )

    def already_decided(self, request_id: int) -> UserError:
        """Why a request can no longer be decided (someone was quicker, or it moved on)."""
        view = self.get(request_id)
        if view.decided_by:
            return Conflict(
                f"Request #{request_id} was already {view.status.label} "
                f"(decided by <@{view.decided_by}>)."
            )
        return Conflict(
            f"Request #{request_id} is {view.status.label}; it can no longer be decided."
        )
