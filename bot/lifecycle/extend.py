"""extend: an approved extension request renews its parent grant's token and lease in Vault,
within the resource's ``max_duration`` in total, and then ends (APPROVED -> ENDED), or fails.

Asking for an extension is a submission of its own (``Submit.request_extension``); this is
what happens once it is approved.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import UserError
from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus, extension_limit
from bot.domain.text import quote
from bot.issuer import IssuerError
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges
from bot.lifecycle.rows import grant_of, load_request, move
from bot.lifecycle.views import Views
from bot.mrkdwn import when
from bot.ports import RequestView
from bot.store.claims import claim, grant_in
from bot.store.db import transaction
from bot.store.models import Grant, utc
from bot.store.user_locks import standing


class _GrantEnded(Exception):
    """The grant ended while an extension was being applied."""


class ApplyExtension:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def apply(self, view: RequestView) -> RequestView:
        """An approved extension renews its parent's token and lease in Vault, within the
        resource's ``max_duration`` in total, and says so when Vault capped it lower."""
        assert view.parent_id is not None
        resource = self.edges.resource(view.resource)
        with Session(self.edges.engine) as session:
            grant = grant_of(session, view.parent_id)
            locked = standing(session, view.requester) is not None
        if locked:  # an admin locked them after the approval: nothing is renewed
            return self._fail(view, "an admin locked the requester's debug-access")
        if (
            grant is None
            or grant.id is None
            or grant.status != GrantStatus.ACTIVE
            or grant.expires_at is None
            or grant.token_accessor is None
        ):
            return self._fail(view, "the access had already ended")
        try:
            wanted = extension_limit(
                utc(grant.issued_at), utc(grant.expires_at), view.duration, resource.max_duration
            )
        except UserError as exc:  # the grant used up its room while the extension waited
            return self._fail(view, str(exc))
        try:
            granted = self.edges.issuer.renew(grant.token_accessor, grant.lease_id, wanted)
        except IssuerError as exc:
            return self._fail(view, f"Vault refused to renew: {exc}")
        try:
            return self._record(view, grant, wanted, granted)
        except _GrantEnded:
            return self._fail(view, "the access ended while it was being extended")

    def _record(
        self, view: RequestView, grant: Grant, wanted: datetime, granted: datetime
    ) -> RequestView:
        assert grant.id is not None and grant.expires_at is not None
        now = self.edges.clock.now()
        capped = granted < wanted - timedelta(seconds=5)
        previous = utc(grant.expires_at)
        with transaction(self.edges.engine) as session:
            # Only while the grant is still live: if it ended while Vault renewed, say so.
            if not claim(
                session, Grant, grant.id, grant_in(GrantStatus.ACTIVE), expires_at=granted
            ):
                raise _GrantEnded
            move(session, view.id, RequestStatus.ENDED, now)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.EXTENDED,
                request_id=view.parent_id,
                resource=view.resource,
                details={
                    "extension": view.id,
                    "from": previous.isoformat(),
                    "to": granted.isoformat(),
                    "asked_until": wanted.isoformat(),
                    "capped_by_vault": capped,
                },
            )
            done = self.views.view(session, load_request(session, view.id))
        self.tell.refresh_request_messages(done)
        until = when(granted)
        cap_note = (
            f" Vault capped the renewal below the {format_duration(view.duration)} approved."
            if capped
            else ""
        )
        self.edges.notifier.tell(
            view.requester,
            f"Your access to `{view.resource}` (request "
            f"#{view.parent_id}) is extended until {until}.{cap_note}",
        )
        self.tell.announce(done, AuditAction.EXTENDED, f"extended until {until}.{cap_note}")
        return done

    def _fail(self, view: RequestView, problem: str) -> RequestView:
        problem = quote(problem, limit=300)
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            move(session, view.id, RequestStatus.FAILED, now, failure=problem)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.FAILED,
                request_id=view.id,
                resource=view.resource,
                details={"error": problem},
            )
            failed = self.views.view(session, load_request(session, view.id))
        self.tell.refresh_request_messages(failed)
        self.edges.notifier.tell(
            view.requester,
            f"Extension #{view.id} of request #{view.parent_id} could not be applied: {problem}",
        )
        self.tell.announce(failed, AuditAction.FAILED, f"extension failed: {problem}", alert=True)
        return failed
