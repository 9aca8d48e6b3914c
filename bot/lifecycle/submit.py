"""command -> request: store a validated request and route it to whoever can approve it now.

Routing asks the approver directory for tiers (a static list, rotations, PagerDuty, user
groups): the first tier with someone other than the requester is asked first; later tiers are
the escalation path. Break-glass skips approval but is announced loudly and awaits review.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, or_, select

from bot.audit import AuditAction, append_event
from bot.domain.durations import check_grant_duration, format_duration, parse_duration
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.identifiers import SLACK_USERGROUP_ID, is_channel_id
from bot.domain.permissions import check_may_request
from bot.domain.requests import (
    RequestStatus,
    ValidRequest,
    extension_limit,
    validate_break_glass,
)
from bot.domain.ssh_keys import SshPublicKey
from bot.domain.text import quote
from bot.lifecycle.announce import Announcer, MessageKind
from bot.lifecycle.edges import Edges
from bot.lifecycle.issue import Issue
from bot.lifecycle.lock import locked_now, refuse_locked
from bot.lifecycle.routing import staffed_tiers
from bot.lifecycle.rows import grant_of, move
from bot.lifecycle.ssh_keys import SshKeys
from bot.lifecycle.views import Views
from bot.policy import Resource
from bot.ports import RequestView
from bot.store.db import serialize, transaction
from bot.store.models import AccessRequest, Grant, GrantStatus, utc


def _key_details(key: SshPublicKey | None) -> dict[str, str]:
    """What the audit trail records of a request's SSH key: its fingerprint, never more."""
    return {"key_fingerprint": key.fingerprint} if key else {}


@dataclass(frozen=True)
class SubmitResult:
    """The stored request and who was asked to approve it."""

    view: RequestView
    asked: tuple[str, ...]


class Submit:
    def __init__(
        self, edges: Edges, views: Views, tell: Announcer, issuing: Issue, keys: SshKeys
    ) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell
        self.issuing = issuing
        self.keys = keys

    def submit(
        self,
        requester: str,
        valid: ValidRequest,
        origin_channel: str | None,
        break_glass: bool = False,
        public_key: str | None = None,
        *,
        stepped_up: bool = False,
    ) -> SubmitResult:
        """Store a validated request and put it in front of its approvers. ``public_key`` is
        what the form's key field held (kinds that sign a key fall back to the registered one).

        A break-glass request whose policy asks for step-up is refused unless ``stepped_up``
        (the requester confirmed with their passkey, ``bot.lifecycle.step_up``)."""
        if origin_channel is not None and not is_channel_id(origin_channel):
            # Stored with the request: refused here, not by the database halfway through.
            raise UserError(f"`{quote(origin_channel)}` is not a Slack channel id.")
        resource = self.edges.resource(valid.resource)
        refuse_locked(self.edges, requester, "ask for access")
        self._check_requester(requester, valid.resource, resource)
        key = self.keys.key_for_request(requester, valid.resource, resource, public_key)
        if break_glass:
            validate_break_glass(valid.resource, resource, valid.duration)
            if self.edges.policy.break_glass_step_up(valid.resource) and not stepped_up:
                raise NotAllowed(
                    f"Break-glass access to `{valid.resource}` needs your passkey: ask again "
                    "with the slash command and confirm on the page it links to."
                )
            return self._break_glass(
                requester, valid, origin_channel, resource, key, stepped_up=stepped_up
            )
        return self.route_new(
            requester=requester,
            resource_name=valid.resource,
            resource=resource,
            duration=valid.duration,
            reason=valid.reason,
            origin_channel=origin_channel,
            key=key,
        )

    def request_extension(self, request_id: int, actor: str, duration_text: str) -> SubmitResult:
        """``/debug-access extend <id> <duration>``: the approvers are asked again."""
        parent, resource, extra = self.check_extension(request_id, actor, duration_text)
        return self.route_new(
            requester=actor,
            resource_name=parent.resource,
            resource=resource,
            duration=extra,
            reason=parent.reason,
            origin_channel=None,
            parent_id=request_id,
        )

    def check_extension(
        self, request_id: int, actor: str, duration_text: str
    ) -> tuple[RequestView, Resource, timedelta]:
        """Every rule an extension request must pass, without changing anything (quick enough
        to run before acknowledging a form)."""
        parent, resource, grant = self._extendable(request_id, actor)
        assert grant.expires_at is not None  # _extendable checked it is active
        extra = check_grant_duration(parse_duration(duration_text), resource.max_duration)
        extension_limit(utc(grant.issued_at), utc(grant.expires_at), extra, resource.max_duration)
        return parent, resource, extra

    def check_may_extend(self, request_id: int, actor: str) -> tuple[RequestView, Resource]:
        """The rules that need no duration: whose grant it is, and that it can be extended now.
        The Extend button asks this before it shows anything of the grant."""
        parent, resource, _grant = self._extendable(request_id, actor)
        return parent, resource

    def _extendable(self, request_id: int, actor: str) -> tuple[RequestView, Resource, Grant]:
        parent = self.views.get(request_id)
        if actor != parent.requester:
            raise NotAllowed("Only the requester can ask to extend their access.")
        refuse_locked(self.edges, actor, "extend access")
        if parent.status is not RequestStatus.ACTIVE:
            raise Conflict(
                f"Request #{request_id} is {parent.status.label}; only active access "
                "can be extended."
            )
        if parent.break_glass:
            raise Conflict("Break-glass access cannot be extended; request access the normal way.")
        resource = self.edges.resource(parent.resource)
        if not resource.grant.renewable:
            raise Conflict(
                f"`{parent.resource}` grants cannot be extended (an SSH certificate's expiry is "
                "signed into it); request access again when this one ends."
            )
        self._check_requester(actor, parent.resource, resource)
        with Session(self.edges.engine) as session:
            grant = grant_of(session, request_id)
            waiting = session.exec(
                select(AccessRequest).where(
                    AccessRequest.parent_id == request_id,
                    AccessRequest.status == RequestStatus.PENDING.value,
                )
            ).first()
        if grant is None or grant.expires_at is None or grant.status != GrantStatus.ACTIVE:
            raise Conflict(f"Request #{request_id} has no active grant to extend.")
        if waiting is not None:
            raise Conflict(
                f"Extension #{waiting.id} of request #{request_id} is already waiting for approval."
            )
        return parent, resource, grant

    @staticmethod
    def _check_no_open_break_glass(session: Session, requester: str, resource_name: str) -> None:
        """One break-glass at a time per person and resource, and none while an earlier one
        awaits review: emergency access must not chain into standing access. Run inside the
        transaction that stores the new one, under ``serialize`` on the same person and
        resource, so two requests at the same moment cannot both pass it."""
        earlier = session.exec(
            select(AccessRequest).where(
                AccessRequest.requester == requester,
                AccessRequest.resource == resource_name,
                col(AccessRequest.break_glass).is_(True),
                or_(
                    col(AccessRequest.reviewed_by).is_(None),
                    col(AccessRequest.status).in_([s.value for s in RequestStatus if s.is_open]),
                ),
            )
        ).first()
        if earlier is not None:
            raise Conflict(
                f"Your break-glass access #{earlier.id} to `{resource_name}` is still "
                "open or awaiting review; ask an approver to review it, or request "
                "access the normal way."
            )

    def _check_requester(self, requester: str, name: str, resource: Resource) -> None:
        if not resource.requesters:
            return
        groups = [e for e in resource.requesters if SLACK_USERGROUP_ID.fullmatch(e)]
        member_of = (
            groups if groups and self.edges.approvers.in_any_group(requester, groups) else []
        )
        check_may_request(requester, name, resource.requesters, member_of)

    def route_new(
        self,
        *,
        requester: str,
        resource_name: str,
        resource: Resource,
        duration: timedelta,
        reason: str,
        origin_channel: str | None,
        parent_id: int | None = None,
        key: SshPublicKey | None = None,
    ) -> SubmitResult:
        """Store a new request (or extension request) and ask the first staffed tier; the
        database refuses a second pending extension of the same grant, even in a race."""
        now = self.edges.clock.now()
        staffed, note = staffed_tiers(
            self.edges.approvers, resource_name, resource, requester, now, locked_now(self.edges)
        )
        primary = staffed[0].users
        pending_until = now + resource.pending_ttl
        with transaction(self.edges.engine) as session:
            request = AccessRequest(
                requester=requester,
                resource=resource_name,
                duration_seconds=int(duration.total_seconds()),
                reason=reason,
                status=RequestStatus.PENDING.value,
                origin_channel=origin_channel,
                created_at=now,
                updated_at=now,
                kind="extension" if parent_id else "access",
                parent_id=parent_id,
                approvals_required=resource.approvals_required,
                asked=json.dumps(primary),
                asked_sources=json.dumps([staffed[0].source]),
                routing_note=note,
                pending_until=pending_until,
                public_key=key.line if key else None,
            )
            session.add(request)
            try:
                session.flush()
            except IntegrityError:
                raise Conflict(
                    f"An extension of request #{parent_id} is already waiting for approval."
                ) from None
            append_event(
                session,
                at=now,
                actor=requester,
                action=AuditAction.REQUESTED,
                request_id=request.id,
                resource=resource_name,
                details={
                    "duration": format_duration(duration),
                    "reason": reason,
                    "asked": list(primary),
                    "routing": note,
                    "kind": request.kind,
                    "extends": parent_id,
                    "approvals_required": resource.approvals_required,
                    **_key_details(key),
                },
            )
            view = self.views.view(session, request)
        refs = self.edges.notifier.announce_request(view, primary, in_channel=True)
        self.tell.remember(view.id, MessageKind.APPROVAL, refs)
        what = (
            f"asked to extend #{parent_id} by {format_duration(duration)}"
            if parent_id
            else "requested"
        )
        self.tell.announce(view, AuditAction.REQUESTED, what)
        return SubmitResult(view=view, asked=primary)

    def check_break_glass(
        self, requester: str, valid: ValidRequest, public_key: str | None
    ) -> None:
        """Every rule a break-glass request must pass, without changing anything (asked before
        the requester is sent to confirm with their passkey)."""
        resource = self.edges.resource(valid.resource)
        self._check_requester(requester, valid.resource, resource)
        self.keys.key_for_request(requester, valid.resource, resource, public_key)
        validate_break_glass(valid.resource, resource, valid.duration)

    def _break_glass(
        self,
        requester: str,
        valid: ValidRequest,
        origin_channel: str | None,
        resource: Resource,
        key: SshPublicKey | None,
        stepped_up: bool = False,
    ) -> SubmitResult:
        now = self.edges.clock.now()
        tiers = self.edges.approvers.tiers(resource.approvers, requester, now)
        on_call = next((t.users for t in tiers if t.users), ())
        with ExitStack() as owned:
            with transaction(self.edges.engine) as session:
                serialize(session, f"break-glass {requester} {valid.resource}")
                self._check_no_open_break_glass(session, requester, valid.resource)
                request = AccessRequest(
                    requester=requester,
                    resource=valid.resource,
                    duration_seconds=int(valid.duration.total_seconds()),
                    reason=valid.reason,
                    status=RequestStatus.PENDING.value,
                    origin_channel=origin_channel,
                    created_at=now,
                    updated_at=now,
                    break_glass=True,
                    asked=json.dumps(on_call),
                    public_key=key.line if key else None,
                )
                session.add(request)
                session.flush()
                assert request.id is not None
                # Owned from before the commit until delivered (``Issue`` re-enters the lock): the
                # timers never see this approved request without an owner (``bot.lifecycle.due``).
                owned.enter_context(self.edges.locks.hold(request.id))
                moved = move(session, request.id, RequestStatus.APPROVED, now)
                moved.decided_by, moved.decided_at = requester, now
                append_event(
                    session,
                    at=now,
                    actor=requester,
                    action=AuditAction.BREAK_GLASS,
                    request_id=request.id,
                    resource=valid.resource,
                    details={
                        "duration": format_duration(valid.duration),
                        "reason": valid.reason,
                        "notified": list(on_call),
                        **_key_details(key),
                        **({"step_up": "passkey"} if stepped_up else {}),
                    },
                )
                view = self.views.view(session, moved)
            refs = self.edges.notifier.announce_request(view, on_call, in_channel=True)
            self.tell.remember(view.id, MessageKind.APPROVAL, refs)
            self.tell.announce(
                view,
                AuditAction.BREAK_GLASS,
                "BREAK-GLASS: access taken without approval; awaiting review",
                alert=True,
            )
            issued = self.issuing.issue(view)
        return SubmitResult(view=issued, asked=on_call)
