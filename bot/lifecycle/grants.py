"""Vault issue -> schedule -> revoke: the life of a grant, and extending one.

Fail closed throughout: a grant is marked ended only after Vault confirms the lease and the
token are gone; a revocation that fails stays REVOKING, is retried with backoff and raised in
the audit channel until it succeeds. Running ``end_grant`` twice, from two replicas, is harmless:
the first claims the grant atomically.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.grants import GrantStatus
from bot.domain.permissions import check_may_end
from bot.domain.requests import RequestStatus, extension_limit
from bot.domain.text import quote
from bot.issuer import (
    DynamicSecret,
    GrantSpec,
    GrantToken,
    IssuerError,
    SecretValue,
    WrappedSecret,
)
from bot.lifecycle.base import SYSTEM_ACTOR, EndReason, LifecycleBase, MessageKind
from bot.mrkdwn import when
from bot.ports import CredentialDelivery, DeliveryError, RequestView
from bot.store.claims import claim, grant_in, move_grant, move_request, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant, utc

log = logging.getLogger(__name__)

# Longer than the worst case of one revoke + confirm (retried calls with 10 s timeouts), so a
# second caller never takes over a revocation that is still running.
CLAIM_TIMEOUT = timedelta(minutes=5)
# How long before the wrapping token expires the bot checks whether it was unwrapped.
COLLECT_MARGIN = timedelta(seconds=15)
RETRY_BACKOFF = (
    timedelta(seconds=15),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
    timedelta(minutes=10),
)


class _GrantEnded(Exception):
    """The grant ended while an extension was being applied."""


def retry_delay(attempts: int) -> timedelta:
    """Backoff for revocation retries: 15 s doubling up to 10 min, then every 10 min."""
    return RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1]


class GrantMixin(LifecycleBase):
    # -- Vault issue ----------------------------------------------------------------------------

    def _issue(self, view: RequestView) -> RequestView:
        resource = self._resource(view.resource)
        spec = GrantSpec(
            request_id=view.id,
            requester=view.requester,
            resource=view.resource,
            ttl=view.duration,
            max_ttl=resource.max_duration,
            vault_path=resource.vault_path,
            vault_policies=resource.vault_policies,
        )
        try:
            token = self.issuer.create_grant_token(spec)
        except IssuerError as exc:
            return self._fail_issue(view, None, f"Vault refused to issue: {exc}")
        with transaction(self.engine) as session:
            # Still ours to issue? A reconcile elsewhere may have failed this request meanwhile.
            still_approved = claim(
                session,
                AccessRequest,
                view.id,
                request_in(RequestStatus.APPROVED),
                updated_at=self.clock.now(),
            )
            grant_id = None
            if still_approved:
                grant = Grant(
                    request_id=view.id,
                    status=GrantStatus.ISSUING.value,
                    token_accessor=token.accessor,
                    issued_at=self.clock.now(),
                )
                session.add(grant)
                session.flush()
                grant_id = grant.id
        if grant_id is None:
            self.issuer.revoke(token.accessor, None)
            log.warning("request %s left APPROVED while issuing; token revoked", view.id)
            return self.get(view.id)
        try:
            secret = (
                self.issuer.read_dynamic_secret(token, resource.vault_path)
                if resource.vault_path
                else None
            )
        except IssuerError as exc:
            return self._fail_issue(view, grant_id, f"Vault could not issue the secret: {exc}")
        expires_at = token.expires_at
        if secret is not None:
            expires_at = min(expires_at, self._stretch_lease(token, secret))
        now = self.clock.now()
        with transaction(self.engine) as session:
            lease_id = secret.lease_id if secret else None
            if not move_grant(
                session, grant_id, GrantStatus.ACTIVE, lease_id=lease_id, expires_at=expires_at
            ):
                raise Conflict(f"Grant {grant_id} of request #{view.id} is no longer issuing.")
            self._move(session, view.id, RequestStatus.ACTIVE, now)
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
                },
            )
            view = self._view(session, self._request(session, view.id))
        self.timers.schedule_end(grant_id, expires_at)
        self._refresh_request_messages(view)
        self._announce(view, AuditAction.ISSUED, f"issued, expires {when(expires_at)}")
        try:
            delivery = self._delivery(view, token, secret, now, expires_at)
            ref = self.notifier.deliver_credentials(view, delivery)
        except (IssuerError, DeliveryError) as exc:
            log.error("delivery of request %s failed: %s", view.id, exc)
            ended = self.end_grant(grant_id, EndReason.DELIVERY_FAILED)
            state = "was revoked" if ended else "is being revoked"
            self.notifier.tell(
                view.requester,
                f"Your credentials for request #{view.id} could "
                f"not be delivered, so the access {state}. Please try again.",
            )
            return self.get(view.id)
        self._remember_messages(view.id, MessageKind.CREDENTIALS, [ref])
        wrapped = delivery.wrapping_token
        accessor = wrapped.accessor if isinstance(wrapped, WrappedSecret) else None
        collect_by = now + self.policy.wrap_ttl if accessor else None
        with transaction(self.engine) as session:
            if accessor:
                claim(session, Grant, grant_id, wrap_accessor=accessor, collect_by=collect_by)
            append_event(
                session,
                at=self.clock.now(),
                actor=SYSTEM_ACTOR,
                action=AuditAction.DELIVERED,
                request_id=view.id,
                resource=view.resource,
                details={
                    "delivery": self.policy.delivery,
                    "collect_by": collect_by.isoformat() if collect_by else None,
                },
            )
        if collect_by is not None:
            self.timers.schedule_collect_check(grant_id, collect_by - COLLECT_MARGIN)
        return view

    def check_collected(self, grant_id: int) -> bool | None:
        """Shortly before the wrapping token expires: did the requester unwrap it? If not, the
        credentials can never be collected, so the access is revoked now (least privilege) and
        the wrapping token with it. Returns whether it was collected (None: nothing to check)."""
        with Session(self.engine) as session:
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
        now = self.clock.now()
        with transaction(self.engine) as session:
            unchecked = col(Grant.collected).is_(None)
            if not claim(session, Grant, grant_id, unchecked, collected=collected):
                return None
            request = self._request(session, grant.request_id)
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
        self.end_grant(grant_id, EndReason.NOT_COLLECTED)
        return False

    def _stretch_lease(self, token: GrantToken, secret: DynamicSecret) -> datetime:
        """A secrets engine's default lease TTL may be shorter than the approved duration (a
        database role's default_ttl): renew the lease up to the grant token's expiry, within the
        role's max_ttl. On failure keep the shorter lease; the requester is told it was capped."""
        if secret.lease_expires_at >= token.expires_at - timedelta(seconds=5):
            return secret.lease_expires_at
        try:
            return self.issuer.renew(token.accessor, secret.lease_id, token.expires_at)
        except IssuerError as exc:
            log.warning("could not renew lease up to the approved duration: %s", exc)
            return secret.lease_expires_at

    def _delivery(
        self,
        view: RequestView,
        token: GrantToken,
        secret: DynamicSecret | None,
        now: datetime,
        expires_at: datetime,
    ) -> CredentialDelivery:
        values: dict[str, SecretValue] = dict(secret.values) if secret else {"token": token.token}
        notes: tuple[str, ...] = ()
        if expires_at < now + view.duration - timedelta(seconds=5):
            notes = (
                f"Vault capped this grant at {format_duration(expires_at - now)}, "
                f"less than the {format_duration(view.duration)} approved.",
            )
        if self.policy.delivery == "dm":
            return CredentialDelivery(expires_at=expires_at, values=values, notes=notes)
        payload = {key: value.reveal() for key, value in values.items()}
        payload.update(
            resource=view.resource, request_id=str(view.id), expires_at=expires_at.isoformat()
        )
        wrapped = self.issuer.wrap(payload, self.policy.wrap_ttl)
        return CredentialDelivery(
            expires_at=expires_at,
            wrapping_token=wrapped,
            wrap_ttl=self.policy.wrap_ttl,
            notes=notes,
        )

    def _fail_issue(self, view: RequestView, grant_id: int | None, problem: str) -> RequestView:
        """Mark the request failed, clean up anything half-issued, and tell both sides."""
        problem = quote(problem, limit=300)  # Vault's words go into Slack messages
        now = self.clock.now()
        with transaction(self.engine) as session:
            self._move(session, view.id, RequestStatus.FAILED, now, failure=problem)
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
            failed = self._view(session, self._request(session, view.id))
        cleaned = grant_id is None or self.end_grant(grant_id, EndReason.ISSUE_FAILED)
        self._refresh_request_messages(failed)
        self._announce(failed, AuditAction.FAILED, f"failed: {problem}", alert=True)
        aftermath = (
            "Nothing was left behind."
            if cleaned
            else "What was half-issued is being revoked; the audit channel follows it."
        )
        self.notifier.tell(
            failed.requester,
            f"Request #{failed.id} for `{failed.resource}` was approved but could "
            f"not be issued: {problem}. {aftermath}",
        )
        if failed.decided_by:
            self.notifier.tell(
                failed.decided_by,
                f"You approved request #{failed.id}, but "
                f"issuing failed: {problem}. The requester has been told.",
            )
        return failed

    # -- revoke (early, at expiry, or to clean up) ------------------------------------------------

    def revoke_early(self, request_id: int, actor: str) -> RequestView:
        """``/debug-access revoke <id>`` or the Revoke button: end a grant or withdraw a request."""
        view = self.get(request_id)
        resource = self.policy.resource(view.resource)
        approver = resource is not None and self.approvers.may_approve(
            actor, resource.approvers, view.requester, self.clock.now()
        )
        check_may_end(actor, view.requester, [actor] if approver else [])
        if view.status is RequestStatus.PENDING:
            if actor != view.requester:
                raise NotAllowed("This request is still waiting: use Deny to refuse it.")
            return self.withdraw(view)
        if view.status not in {RequestStatus.ACTIVE, RequestStatus.REVOKING}:
            raise Conflict(
                f"Request #{request_id} is {view.status.label}; there is nothing to revoke."
            )
        with Session(self.engine) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
            grant_id = grant.id if grant else None
        if grant_id is None:
            raise Conflict(f"Request #{request_id} has no grant to revoke.")
        self.end_grant(grant_id, EndReason.REVOKED, actor=actor)
        return self.get(request_id)

    def end_grant(self, grant_id: int, reason: str, actor: str = SYSTEM_ACTOR) -> bool:
        """Revoke a grant in Vault, confirm it is gone, then (only then) mark it ended.

        Safe to call any number of times, from any replica: the first caller claims the grant
        atomically; others return False. On failure the grant stays REVOKING, the audit channel
        is alerted, and a retry is scheduled. Returns True when this call ended the grant.
        """
        now = self.clock.now()
        with transaction(self.engine) as session:
            # Only REVOKING grants carry a claim: an unclaimed one is free to take, and so is a
            # stale one (its owner died mid-revocation): the REVOKING -> REVOKING re-claim.
            unclaimed = or_(
                col(Grant.claimed_at).is_(None), col(Grant.claimed_at) < now - CLAIM_TIMEOUT
            )
            if not move_grant(session, grant_id, GrantStatus.REVOKING, unclaimed, claimed_at=now):
                return False
            grant = self._grant(session, grant_id)
            if grant.end_reason is None:
                grant.end_reason = reason
                grant.ended_by = actor
                session.add(grant)
            # The request follows if it was active (a failed issue already made it FAILED).
            move_request(session, grant.request_id, RequestStatus.REVOKING, now)
            accessor, lease_id = grant.token_accessor, grant.lease_id
            end_reason = grant.end_reason or reason
            ended_by = grant.ended_by or actor
            request_id = grant.request_id
        try:
            self.issuer.revoke(accessor, lease_id)
            if not self.issuer.confirm_revoked(accessor, lease_id):
                raise IssuerError("Vault still reports the lease or token as live after revoke")
        except IssuerError as exc:
            self._revocation_failed(grant_id, request_id, str(exc), held_since=now)
            return False
        except Exception as exc:  # never leave a claimed grant without a retry
            log.exception("unexpected error revoking grant %s", grant_id)
            self._revocation_failed(
                grant_id,
                request_id,
                f"unexpected {type(exc).__name__} while revoking",
                held_since=now,
            )
            return False
        return self._mark_ended(grant_id, request_id, end_reason, ended_by, held_since=now)

    @staticmethod
    def _release(
        session: Session,
        grant_id: int,
        held_since: datetime,
        outcome: GrantStatus,
        **values: Any,
    ) -> bool:
        """Write the outcome of a revocation (REVOKED, or still REVOKING to be retried) only if
        this caller still holds the claim: one slower than CLAIM_TIMEOUT may have been
        overtaken by another."""
        still_ours = col(Grant.claimed_at) == held_since
        return move_grant(session, grant_id, outcome, still_ours, claimed_at=None, **values)

    def _revocation_failed(
        self, grant_id: int, request_id: int, problem: str, held_since: datetime
    ) -> None:
        problem = quote(problem, limit=300)
        now = self.clock.now()
        with transaction(self.engine) as session:
            if not self._release(
                session,
                grant_id,
                held_since,
                GrantStatus.REVOKING,
                last_error=problem,
                revoke_attempts=Grant.revoke_attempts + 1,
            ):
                return
            attempts = self._grant(session, grant_id).revoke_attempts
            retry_at = now + retry_delay(attempts)
            claim(session, Grant, grant_id, next_retry_at=retry_at)
            request = self._request(session, request_id)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.REVOKE_FAILED,
                request_id=request_id,
                resource=request.resource,
                details={"error": problem, "attempt": attempts},
            )
            view = self._view(session, request)
        self.timers.schedule_retry(grant_id, retry_at)
        log.error("revocation of grant %s failed (attempt %s): %s", grant_id, attempts, problem)
        self._announce(
            view,
            AuditAction.REVOKE_FAILED,
            f"REVOCATION FAILED (attempt {attempts}): {problem}. Still live in Vault until "
            f"revoked; retrying in {format_duration(retry_at - now)}.",
            alert=True,
        )

    def _mark_ended(
        self, grant_id: int, request_id: int, reason: str, actor: str, held_since: datetime
    ) -> bool:
        now = self.clock.now()
        with transaction(self.engine) as session:
            if not self._release(session, grant_id, held_since, GrantStatus.REVOKED, ended_at=now):
                return False
            grant = self._grant(session, grant_id)
            request = self._request(session, request_id)
            # An access request ends with its grant; an extension's own ENDED is not ours.
            move_request(
                session, request_id, RequestStatus.ENDED, now, only_from=[RequestStatus.REVOKING]
            )
            action = AuditAction.EXPIRED if reason == EndReason.EXPIRED else AuditAction.REVOKED
            append_event(
                session,
                at=now,
                actor=actor,
                action=action,
                request_id=request_id,
                resource=request.resource,
                details={
                    "reason": reason,
                    "lease_id": grant.lease_id,
                    "token_accessor": grant.token_accessor,
                    "held_for": format_duration(now - utc(grant.issued_at)),
                    "confirmed_by_vault": True,
                },
            )
            view = self._view(session, self._request(session, request_id))
        for ref in self._refs(request_id, MessageKind.CREDENTIALS):
            self.notifier.close_credentials(view, ref)
        if reason == EndReason.NOT_COLLECTED:
            self.notifier.tell(
                view.requester,
                f"Your credentials for `{view.resource}` (request "
                f"#{view.id}) were not unwrapped in time, so the access was "
                "revoked. Ask again when you are ready to use it.",
            )
        if reason in {EndReason.EXPIRED, EndReason.REVOKED}:
            who = "it expired" if reason == EndReason.EXPIRED else f"<@{actor}> revoked it"
            self.notifier.tell(
                view.requester,
                f"Your access to `{view.resource}` (request "
                f"#{view.id}) has ended: {who}. Vault confirmed the credentials "
                "are gone.",
            )
        text = {
            EndReason.NOT_COLLECTED: "credentials never unwrapped, so revoked; Vault "
            "confirmed revocation",
            EndReason.EXPIRED: "expired; Vault confirmed revocation",
            EndReason.REVOKED: f"revoked early by <@{actor}>; Vault confirmed revocation",
        }
        self._announce(
            view, action, text.get(reason, f"cleaned up ({reason}); Vault confirmed revocation")
        )
        return True

    # -- extension ----------------------------------------------------------------------------

    def _apply_extension(self, view: RequestView) -> RequestView:
        """An approved extension renews its parent's token and lease in Vault, within the
        resource's ``max_duration`` in total, and says so when Vault capped it lower."""
        assert view.parent_id is not None
        resource = self._resource(view.resource)
        with Session(self.engine) as session:
            grant = self._grant_of(session, view.parent_id)
        if (
            grant is None
            or grant.id is None
            or grant.status != GrantStatus.ACTIVE
            or grant.expires_at is None
            or grant.token_accessor is None
        ):
            return self._fail_extension(view, "the access had already ended")
        try:
            wanted = extension_limit(
                utc(grant.issued_at), utc(grant.expires_at), view.duration, resource.max_duration
            )
        except UserError as exc:  # the grant used up its room while the extension waited
            return self._fail_extension(view, str(exc))
        try:
            granted = self.issuer.renew(grant.token_accessor, grant.lease_id, wanted)
        except IssuerError as exc:
            return self._fail_extension(view, f"Vault refused to renew: {exc}")
        try:
            return self._record_extension(view, grant, wanted, granted)
        except _GrantEnded:
            return self._fail_extension(view, "the access ended while it was being extended")

    def _record_extension(
        self, view: RequestView, grant: Grant, wanted: datetime, granted: datetime
    ) -> RequestView:
        assert grant.id is not None and grant.expires_at is not None
        now = self.clock.now()
        capped = granted < wanted - timedelta(seconds=5)
        previous = utc(grant.expires_at)
        with transaction(self.engine) as session:
            # Only while the grant is still live: if it ended while Vault renewed, say so.
            if not claim(
                session, Grant, grant.id, grant_in(GrantStatus.ACTIVE), expires_at=granted
            ):
                raise _GrantEnded
            self._move(session, view.id, RequestStatus.ENDED, now)
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
            done = self._view(session, self._request(session, view.id))
        self.timers.schedule_end(grant.id, granted)
        self._refresh_request_messages(done)
        until = when(granted)
        cap_note = (
            f" Vault capped the renewal below the {format_duration(view.duration)} approved."
            if capped
            else ""
        )
        self.notifier.tell(
            view.requester,
            f"Your access to `{view.resource}` (request "
            f"#{view.parent_id}) is extended until {until}.{cap_note}",
        )
        self._announce(done, AuditAction.EXTENDED, f"extended until {until}.{cap_note}")
        return done

    def _fail_extension(self, view: RequestView, problem: str) -> RequestView:
        problem = quote(problem, limit=300)
        now = self.clock.now()
        with transaction(self.engine) as session:
            self._move(session, view.id, RequestStatus.FAILED, now, failure=problem)
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.FAILED,
                request_id=view.id,
                resource=view.resource,
                details={"error": problem},
            )
            failed = self._view(session, self._request(session, view.id))
        self._refresh_request_messages(failed)
        self.notifier.tell(
            view.requester,
            f"Extension #{view.id} of request #{view.parent_id} could not be applied: {problem}",
        )
        self._announce(failed, AuditAction.FAILED, f"extension failed: {problem}", alert=True)
        return failed
