"""What every use case shares: the edges, row access, views, and the "tell people" helpers.

Each step follows one rule: **state first, then Slack**. The database transaction that changes a
request also appends its audit row; only after it commits does anybody hear about it. A crash
between the two loses a message, never a fact.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, or_
from sqlmodel import Session, col, select

from bot.audit import AuditAction
from bot.domain.errors import Conflict, NotAllowed, NotFound
from bot.domain.requests import RequestStatus, check_transition
from bot.issuer import Issuer
from bot.policy import Policy, Resource
from bot.ports import (
    ApproverDirectory,
    ApproverTier,
    Clock,
    MessageRef,
    Notifier,
    RequestView,
    Timers,
)
from bot.store.claims import move_request
from bot.store.db import transaction
from bot.store.models import AccessRequest, Decision, Grant, RequestMessage, utc

log = logging.getLogger(__name__)

RowT = TypeVar("RowT", AccessRequest, Grant)

SYSTEM_ACTOR = "debug-access"


class EndReason:
    EXPIRED = "expired"
    REVOKED = "revoked"
    ISSUE_FAILED = "issue_failed"
    DELIVERY_FAILED = "delivery_failed"
    NOT_COLLECTED = "not_collected"


class MessageKind:
    APPROVAL = "approval"
    CREDENTIALS = "credentials"
    AUDIT = "audit"


@dataclass(frozen=True)
class SubmitResult:
    view: RequestView
    asked: tuple[str, ...]


class LifecycleBase:
    """The edges the use cases talk to, and the helpers they share."""

    def __init__(
        self,
        *,
        engine: Engine,
        policy: Policy,
        issuer: Issuer,
        notifier: Notifier,
        timers: Timers,
        clock: Clock,
        approvers: ApproverDirectory,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.issuer = issuer
        self.notifier = notifier
        self.timers = timers
        self.clock = clock
        self.approvers = approvers

    # -- implemented by the use-case modules (declared here so each can call the others) ------

    def _issue(self, view: RequestView) -> RequestView:
        raise NotImplementedError

    def _apply_extension(self, view: RequestView) -> RequestView:
        raise NotImplementedError

    def end_grant(self, grant_id: int, reason: str, actor: str = SYSTEM_ACTOR) -> bool:
        raise NotImplementedError

    def withdraw(self, view: RequestView) -> RequestView:
        raise NotImplementedError

    def expire_pending(self, request_id: int) -> bool:
        raise NotImplementedError

    def escalate(self, request_id: int) -> bool:
        raise NotImplementedError

    def _fail_issue(self, view: RequestView, grant_id: int | None, problem: str) -> RequestView:
        raise NotImplementedError

    # -- routing ----------------------------------------------------------------------------------

    def _tiers(
        self, resource_name: str, resource: Resource, requester: str, now: datetime
    ) -> tuple[list[ApproverTier], str | None]:
        """The approver tiers with someone in them now, and the routing notes (fallbacks)."""
        tiers = self.approvers.tiers(resource.approvers, requester, now)
        notes = [t.note for t in tiers if t.note]
        staffed = [t for t in tiers if t.users]
        if not staffed:
            raise NotAllowed(
                f"Nobody but you can approve `{resource_name}` right now"
                + (f" ({'; '.join(notes)})" if notes else "")
                + ". Ask the owners of the policy to add approvers."
            )
        return staffed, "; ".join(notes) or None

    # -- queries ----------------------------------------------------------------------------------

    def get(self, request_id: int) -> RequestView:
        with Session(self.engine) as session:
            return self._view(session, self._request(session, request_id))

    def open_requests_of(self, user: str) -> list[RequestView]:
        """The user's pending requests and live grants, newest first."""
        open_states = [s.value for s in RequestStatus if s.is_open]
        with Session(self.engine) as session:
            rows = session.exec(
                select(AccessRequest)
                .where(AccessRequest.requester == user, col(AccessRequest.status).in_(open_states))
                .order_by(col(AccessRequest.id).desc())
            )
            return [self._view(session, row) for row in rows]

    def waiting_for(self, user: str) -> list[RequestView]:
        """Pending requests this user may decide now and has not yet approved."""
        now = self.clock.now()
        with Session(self.engine) as session:
            rows = list(
                session.exec(
                    select(AccessRequest)
                    .where(AccessRequest.status == RequestStatus.PENDING.value)
                    .order_by(col(AccessRequest.id))
                )
            )
            views = [self._view(session, row) for row in rows]
        waiting = []
        for view in views:
            resource = self.policy.resource(view.resource)
            if (
                resource is not None
                and user not in view.approved_by
                and self.approvers.may_approve(user, resource.approvers, view.requester, now)
            ):
                waiting.append(view)
        return waiting

    def recent_decisions(self, user: str, limit: int = 5) -> list[RequestView]:
        """The latest decided requests this user asked for or decided."""
        with Session(self.engine) as session:
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
            return [self._view(session, row) for row in rows]

    # -- rows -------------------------------------------------------------------------------------

    def _resource(self, name: str) -> Resource:
        resource = self.policy.resource(name)
        if resource is None:
            raise NotFound(f"`{name}` is no longer in the policy.")
        return resource

    @staticmethod
    def _fresh(session: Session, model: type[RowT], key: int, missing: str) -> RowT:
        """The row as committed now (refreshed: another transaction may just have moved it)."""
        row = session.get(model, key)
        if row is None:
            raise NotFound(missing)
        session.refresh(row)
        return row

    @staticmethod
    def _request(session: Session, request_id: int) -> AccessRequest:
        return LifecycleBase._fresh(
            session, AccessRequest, request_id, f"There is no request #{request_id}."
        )

    @staticmethod
    def _grant(session: Session, grant_id: int) -> Grant:
        return LifecycleBase._fresh(session, Grant, grant_id, f"There is no grant {grant_id}.")

    @staticmethod
    def _grant_of(session: Session, request_id: int) -> Grant | None:
        return session.exec(select(Grant).where(Grant.request_id == request_id)).first()

    @staticmethod
    def _move(
        session: Session,
        request_id: int,
        target: RequestStatus,
        now: datetime,
        **values: Any,
    ) -> AccessRequest:
        """Move a request the state machine's way, or raise Conflict saying why it cannot."""
        if not move_request(session, request_id, target, now, **values):
            current = RequestStatus(LifecycleBase._request(session, request_id).status)
            check_transition(current, target)  # raises Conflict naming both states
            raise Conflict(f"Request #{request_id} changed while it was being updated.")
        return LifecycleBase._request(session, request_id)

    def _view(self, session: Session, request: AccessRequest) -> RequestView:
        assert request.id is not None
        resource = self.policy.resource(request.resource)
        grant = self._grant_of(session, request.parent_id or request.id)
        approved_by = tuple(
            session.exec(
                select(Decision.approver)
                .where(Decision.request_id == request.id, Decision.verdict == "approve")
                .order_by(col(Decision.decided_at), col(Decision.id))
            )
        )
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
        )

    # -- telling people ---------------------------------------------------------------------------

    def _refs(self, request_id: int, kind: str) -> list[MessageRef]:
        with Session(self.engine) as session:
            return [
                MessageRef(m.channel, m.ts)
                for m in session.exec(
                    select(RequestMessage)
                    .where(RequestMessage.request_id == request_id, RequestMessage.kind == kind)
                    .order_by(col(RequestMessage.id))
                )
            ]

    def _remember_messages(self, request_id: int, kind: str, refs: Sequence[MessageRef]) -> None:
        if not refs:
            return
        with transaction(self.engine) as session:
            for ref in refs:
                session.add(
                    RequestMessage(request_id=request_id, kind=kind, channel=ref.channel, ts=ref.ts)
                )

    def _refresh_request_messages(self, view: RequestView) -> None:
        self.notifier.refresh_request(view, self._refs(view.id, MessageKind.APPROVAL))

    def _announce(
        self,
        view: RequestView,
        action: AuditAction,
        text: str,
        alert: bool = False,
        homes: bool = True,
    ) -> None:
        """Post to the audit channel, threaded under the request (an extension under the grant
        it extends), and refresh the App Home of everyone involved (``homes=False`` when the
        next step announces again at once, so each Home is published once, not twice)."""
        root_id = view.parent_id or view.id
        roots = self._refs(root_id, MessageKind.AUDIT)
        posted = self.notifier.audit(
            view, action.value, text, alert=alert, thread=roots[0] if roots else None
        )
        if posted is not None and not roots:
            self._remember_messages(root_id, MessageKind.AUDIT, [posted])
        if homes:
            self._homes_changed(view)

    def _homes_changed(self, view: RequestView, extra: Iterable[str] = ()) -> None:
        users = [view.requester, *view.approvers, *view.approved_by, *extra]
        if view.decided_by:
            users.append(view.decided_by)
        self.notifier.home_changed(list(dict.fromkeys(users)))
