"""Vault issue: an approved request becomes a grant (ISSUING -> ACTIVE) and its credentials
are delivered; its ``expires_at`` and, for wrapped delivery, ``collect_by`` are when the timers
end it and check the collection (``bot.lifecycle.due``).

A failure at any step fails the request (APPROVED -> FAILED) and hands whatever Vault already
issued to ``EndGrant``, so nothing is left live.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session, col

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import Conflict
from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus
from bot.domain.text import quote
from bot.issuer import (
    GrantSpec,
    GrantToken,
    IssuerError,
    Obtained,
    SecretValue,
    WrappedSecret,
)
from bot.lifecycle.announce import Announcer, MessageKind
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges, EndReason
from bot.lifecycle.revoke import EndGrant
from bot.lifecycle.rows import load_request, move
from bot.lifecycle.views import Views
from bot.mrkdwn import when
from bot.ports import CredentialDelivery, DeliveryError, RequestView
from bot.store.claims import claim, move_grant, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant

log = logging.getLogger(__name__)

# How long before the wrapping token expires the bot checks whether it was unwrapped.
COLLECT_MARGIN = timedelta(seconds=15)


class Issue:
    def __init__(self, edges: Edges, views: Views, tell: Announcer, ending: EndGrant) -> None:
        self.edges = edges
        self.issuer = edges.issuer  # named as before the split, to ease merging the grant kinds
        self.views = views
        self.tell = tell
        self.ending = ending

    def issue(self, view: RequestView) -> RequestView:
        """Issue an approved request in Vault, record the grant (its expiry is when it is due
        to end) and deliver the credentials. Any failure fails the request and revokes what was
        half-issued."""
        resource = self.edges.resource(view.resource)
        with Session(self.edges.engine) as session:
            public_key = load_request(session, view.id).public_key
        spec = GrantSpec(
            request_id=view.id,
            requester=view.requester,
            resource=view.resource,
            ttl=view.duration,
            max_ttl=resource.max_duration,
            grant=resource.grant,
            public_key=public_key,
        )
        try:
            token = self.issuer.create_grant_token(spec)
        except IssuerError as exc:
            return self.fail(view, None, f"Vault refused to issue: {exc}")
        with transaction(self.edges.engine) as session:
            # Still ours to issue? Another replica may have failed this request as stranded.
            still_approved = claim(
                session,
                AccessRequest,
                view.id,
                request_in(RequestStatus.APPROVED),
                updated_at=self.edges.clock.now(),
            )
            grant_id = None
            if still_approved:
                grant = Grant(
                    request_id=view.id,
                    status=GrantStatus.ISSUING.value,
                    token_accessor=token.accessor,
                    issued_at=self.edges.clock.now(),
                )
                session.add(grant)
                session.flush()
                grant_id = grant.id
        if grant_id is None:
            self.issuer.revoke(token.accessor, None)
            log.warning("request %s left APPROVED while issuing; token revoked", view.id)
            return self.views.get(view.id)
        try:
            secret = self.issuer.obtain(token, spec)
        except IssuerError as exc:
            return self.fail(view, grant_id, f"Vault could not issue the secret: {exc}")
        expires_at = min(token.expires_at, self._stretch_lease(token, secret))
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            lease_id = secret.lease_id
            if not move_grant(
                session, grant_id, GrantStatus.ACTIVE, lease_id=lease_id, expires_at=expires_at
            ):
                raise Conflict(f"Grant {grant_id} of request #{view.id} is no longer issuing.")
            move(session, view.id, RequestStatus.ACTIVE, now)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.ISSUED,
                request_id=view.id,
                resource=view.resource,
                details={
                    "lease_id": lease_id,
                    "token_accessor": token.accessor,
                    "expires_at": expires_at.isoformat(),
                    "held_for": format_duration(expires_at - now),
                    **secret.audit,
                },
            )
            view = self.views.view(session, load_request(session, view.id))
        self.tell.refresh_request_messages(view)
        self.tell.announce(view, AuditAction.ISSUED, f"issued, expires {when(expires_at)}")
        try:
            delivery = self._delivery(view, secret, now, expires_at, resource.grant.delivers_secret)
            ref = self.edges.notifier.deliver_credentials(view, delivery)
        except (IssuerError, DeliveryError) as exc:
            log.error("delivery of request %s failed: %s", view.id, exc)
            ended = self.ending.end_grant(grant_id, EndReason.DELIVERY_FAILED)
            state = "was revoked" if ended else "is being revoked"
            self.edges.notifier.tell(
                view.requester,
                f"Your credentials for request #{view.id} could "
                f"not be delivered, so the access {state}. Please try again.",
            )
            return self.views.get(view.id)
        self.tell.remember(view.id, MessageKind.CREDENTIALS, [ref])
        wrapped = delivery.wrapping_token
        accessor = wrapped.accessor if isinstance(wrapped, WrappedSecret) else None
        collect_by = now + self.edges.policy.wrap_ttl if accessor else None
        with transaction(self.edges.engine) as session:
            if accessor:
                claim(session, Grant, grant_id, wrap_accessor=accessor, collect_by=collect_by)
            append_event(
                session,
                at=self.edges.clock.now(),
                actor=SYSTEM_ACTOR,
                action=AuditAction.DELIVERED,
                request_id=view.id,
                resource=view.resource,
                details={
                    "delivery": "wrapped" if accessor else "dm",
                    "collect_by": collect_by.isoformat() if collect_by else None,
                },
            )
        return view

    def _delivery(
        self,
        view: RequestView,
        secret: Obtained,
        now: datetime,
        expires_at: datetime,
        secret_values: bool,
    ) -> CredentialDelivery:
        """Response-wrapped when the policy says so and what is delivered is a secret; a DM
        otherwise (an SSH certificate is useless without the private key it was signed for)."""
        values: dict[str, SecretValue] = dict(secret.values)
        notes: tuple[str, ...] = ()
        if expires_at < now + view.duration - timedelta(seconds=5):
            notes = (
                f"Vault capped this grant at {format_duration(expires_at - now)}, "
                f"less than the {format_duration(view.duration)} approved.",
            )
        if self.edges.policy.delivery == "dm" or not secret_values:
            return CredentialDelivery(
                expires_at=expires_at,
                values=values,
                notes=notes,
                instructions=secret.instructions,
                verbatim=secret.verbatim,
            )
        payload = {key: value.reveal() for key, value in values.items()}
        payload.update(
            resource=view.resource, request_id=str(view.id), expires_at=expires_at.isoformat()
        )
        wrapped = self.issuer.wrap(payload, self.edges.policy.wrap_ttl)
        return CredentialDelivery(
            expires_at=expires_at,
            wrapping_token=wrapped,
            wrap_ttl=self.edges.policy.wrap_ttl,
            notes=notes,
            instructions=secret.instructions,
        )

    def _stretch_lease(self, token: GrantToken, secret: Obtained) -> datetime:
        """A secrets engine's default lease TTL may be shorter than the approved duration (a
        database role's default_ttl): renew the lease up to the grant token's expiry, within the
        role's max_ttl. On failure keep the shorter lease; the requester is told it was capped."""
        if secret.lease_id is None or secret.lease_expires_at is None:
            return token.expires_at  # nothing leased: the token alone bounds the grant
        if secret.lease_expires_at >= token.expires_at - timedelta(seconds=5):
            return secret.lease_expires_at
        try:
            return self.issuer.renew(token.accessor, secret.lease_id, token.expires_at)
        except IssuerError as exc:
            log.warning("could not renew lease up to the approved duration: %s", exc)
            return secret.lease_expires_at

    def fail(self, view: RequestView, grant_id: int | None, problem: str) -> RequestView:
        """Mark the request failed, clean up anything half-issued, and tell both sides."""
        problem = quote(problem, limit=300)  # Vault's words go into Slack messages
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            move(session, view.id, RequestStatus.FAILED, now, failure=problem)
            if grant_id is not None:
                move_grant(
                    session, grant_id, GrantStatus.REVOKING, end_reason=EndReason.ISSUE_FAILED
                )
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
        cleaned = grant_id is None or self.ending.end_grant(grant_id, EndReason.ISSUE_FAILED)
        self.tell.refresh_request_messages(failed)
        self.tell.announce(failed, AuditAction.FAILED, f"failed: {problem}", alert=True)
        aftermath = (
            "Nothing was left behind."
            if cleaned
            else "What was half-issued is being revoked; the audit channel follows it."
        )
        self.edges.notifier.tell(
            failed.requester,
            f"Request #{failed.id} for `{failed.resource}` was approved but could "
            f"not be issued: {problem}. {aftermath}",
        )
        if failed.decided_by:
            self.edges.notifier.tell(
                failed.decided_by,
                f"You approved request #{failed.id}, but "
                f"issuing failed: {problem}. The requester has been told.",
            )
        return failed

    def check_collected(self, grant_id: int) -> bool | None:
        """Shortly before the wrapping token expires: did the requester unwrap it? If not, the
        credentials can never be collected, so the access is revoked now (least privilege) and
        the wrapping token with it. Returns whether it was collected (None: nothing to check)."""
        with Session(self.edges.engine) as session:
            grant = session.get(Grant, grant_id)
        if (
            grant is None
            or grant.status != GrantStatus.ACTIVE
            or grant.collected is not None
            or not grant.wrap_accessor
        ):
            return None
        try:
            # The wrapping token is gone before its TTL only if it was unwrapped.
            collected = self.issuer.confirm_revoked(grant.wrap_accessor, None)
        except IssuerError as exc:
            log.warning("could not check whether grant %s was unwrapped: %s", grant_id, exc)
            return None
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            unchecked = col(Grant.collected).is_(None)
            if not claim(session, Grant, grant_id, unchecked, collected=collected):
                return None
            request = load_request(session, grant.request_id)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.COLLECTED if collected else AuditAction.NOT_COLLECTED,
                request_id=grant.request_id,
                resource=request.resource,
            )
        if collected:
            return True
        try:
            self.issuer.revoke(grant.wrap_accessor, None)  # nobody may unwrap it late
        except IssuerError as exc:
            log.warning("could not revoke the unused wrapping token of grant %s: %s", grant_id, exc)
        self.ending.end_grant(grant_id, EndReason.NOT_COLLECTED)
        return False
