"""Use cases of the request lifecycle: submit, decide, issue, end, reconcile.

Each step follows one rule: **state first, then Slack**. The database transaction that changes a
request also appends its audit row; only after it commits does anybody hear about it. A crash
between the two loses a message, never a fact.

Fail closed throughout: a request is approved only by an atomic claim on a PENDING row; a grant
is marked ended only after Vault confirms the lease and the token are gone; a revocation that
fails is retried with backoff and raised to the audit channel until it succeeds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, update
from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import Conflict, NotAllowed, NotFound, UserError
from bot.domain.permissions import check_may_decide, check_may_end, eligible_approvers
from bot.domain.requests import RequestStatus, ValidRequest, check_transition
from bot.issuer import DynamicSecret, GrantSpec, GrantToken, Issuer, IssuerError, SecretValue
from bot.policy import Policy, Resource
from bot.ports import (
    Clock,
    CredentialDelivery,
    DeliveryError,
    MessageRef,
    Notifier,
    RequestView,
    Timers,
)
from bot.store.db import transaction
from bot.store.models import AccessRequest, Decision, Grant, GrantStatus, RequestMessage, utc

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "debug-access"
CLAIM_TIMEOUT = timedelta(minutes=2)
RETRY_BACKOFF = (
    timedelta(seconds=15), timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2),
    timedelta(minutes=5), timedelta(minutes=10),
)


class EndReason:
    EXPIRED = "expired"
    REVOKED = "revoked"
    ISSUE_FAILED = "issue_failed"
    DELIVERY_FAILED = "delivery_failed"
    INTERRUPTED = "interrupted"


def retry_delay(attempts: int) -> timedelta:
    """Backoff for revocation retries: 15 s doubling up to 10 min, then every 10 min."""
    return RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1]


@dataclass(frozen=True)
class SubmitResult:
    view: RequestView
    asked: tuple[str, ...]


class AccessLifecycle:
    """The request lifecycle, wired to its edges."""

    def __init__(
        self, *, engine: Engine, policy: Policy, issuer: Issuer, notifier: Notifier,
        timers: Timers, clock: Clock,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.issuer = issuer
        self.notifier = notifier
        self.timers = timers
        self.clock = clock

    # -- command -> request ---------------------------------------------------------------------

    def submit(
        self, requester: str, valid: ValidRequest, origin_channel: str | None
    ) -> SubmitResult:
        """Store a validated request and put it in front of its approvers."""
        resource = self._resource(valid.resource)
        asked = tuple(eligible_approvers(requester, resource.approvers))
        if not asked:
            raise NotAllowed(
                f"Nobody but you can approve `{valid.resource}`, and nobody approves their own "
                "request. Ask the owners of the policy to add another approver."
            )
        now = self.clock.now()
        with transaction(self.engine) as session:
            request = AccessRequest(
                requester=requester, resource=valid.resource,
                duration_seconds=int(valid.duration.total_seconds()), reason=valid.reason,
                status=RequestStatus.PENDING.value, origin_channel=origin_channel,
                created_at=now, updated_at=now,
            )
            session.add(request)
            session.flush()
            append_event(
                session, at=now, actor=requester, action=AuditAction.REQUESTED,
                request_id=request.id, resource=valid.resource,
                details={"duration": format_duration(valid.duration), "reason": valid.reason,
                         "approvers": list(asked)},
            )
            view = self._view(session, request)
        refs = self.notifier.announce_request(view)
        self._remember_messages(view.id, "approval", refs)
        self.notifier.audit(view, AuditAction.REQUESTED, "requested")
        return SubmitResult(view=view, asked=asked)

    # -- decision -------------------------------------------------------------------------------

    def decide(self, request_id: int, actor: str, approve: bool) -> RequestView:
        """Record an approver's verdict; on approval, issue. Idempotent under retries and races."""
        current = self.get(request_id)
        check_may_decide(actor, current.requester, current.approvers)
        now = self.clock.now()
        target = RequestStatus.APPROVED if approve else RequestStatus.DENIED
        with transaction(self.engine) as session:
            # The claim is the first statement so that it takes the write lock before any read:
            # of two simultaneous clicks exactly one moves the row out of PENDING.
            claimed = session.exec(
                update(AccessRequest)
                .where(col(AccessRequest.id) == request_id,
                       col(AccessRequest.status) == RequestStatus.PENDING.value)
                .values(status=target.value, decided_by=actor, decided_at=now, updated_at=now)
            ).rowcount
            if claimed != 1:
                raise self._already_decided(request_id)
            session.add(Decision(request_id=request_id, approver=actor,
                                 verdict="approve" if approve else "deny", decided_at=now))
            append_event(
                session, at=now, actor=actor,
                action=AuditAction.APPROVED if approve else AuditAction.DENIED,
                request_id=request_id, resource=current.resource,
            )
            view = self._view(session, self._request(session, request_id))
        self._refresh_request_messages(view)
        if approve:
            self.notifier.audit(view, AuditAction.APPROVED, f"approved by <@{actor}>")
            return self._issue(view)
        self.notifier.audit(view, AuditAction.DENIED, f"denied by <@{actor}>")
        self.notifier.tell(
            view.requester,
            f"<@{actor}> denied your request #{view.id} for `{view.resource}`. Nothing was issued.",
        )
        return view

    def _already_decided(self, request_id: int) -> UserError:
        view = self.get(request_id)
        if view.decided_by:
            return Conflict(f"Request #{request_id} was already {view.status.label} "
                            f"(decided by <@{view.decided_by}>).")
        return Conflict(
            f"Request #{request_id} is {view.status.label}; it can no longer be decided."
        )

    # -- Vault issue ----------------------------------------------------------------------------

    def _issue(self, view: RequestView) -> RequestView:
        resource = self._resource(view.resource)
        spec = GrantSpec(
            request_id=view.id, requester=view.requester, resource=view.resource,
            ttl=view.duration, max_ttl=resource.max_duration, vault_path=resource.vault_path,
            vault_policies=resource.vault_policies,
        )
        try:
            token = self.issuer.create_grant_token(spec)
        except IssuerError as exc:
            return self._fail_issue(view, None, f"Vault refused to issue: {exc}")
        with transaction(self.engine) as session:
            grant = Grant(request_id=view.id, status=GrantStatus.ISSUING,
                          token_accessor=token.accessor, issued_at=self.clock.now())
            session.add(grant)
            session.flush()
            grant_id = grant.id
        assert grant_id is not None
        try:
            secret = (self.issuer.read_dynamic_secret(token, resource.vault_path)
                      if resource.vault_path else None)
        except IssuerError as exc:
            return self._fail_issue(view, grant_id, f"Vault could not issue the secret: {exc}")
        expires_at = token.expires_at
        if secret is not None:
            expires_at = min(expires_at, secret.lease_expires_at)
        now = self.clock.now()
        with transaction(self.engine) as session:
            grant_row = self._grant(session, grant_id)
            grant_row.status = GrantStatus.ACTIVE
            grant_row.lease_id = secret.lease_id if secret else None
            grant_row.expires_at = expires_at
            session.add(grant_row)
            self._move(session, view.id, RequestStatus.ACTIVE, now)
            append_event(
                session, at=now, actor=SYSTEM_ACTOR, action=AuditAction.ISSUED,
                request_id=view.id, resource=view.resource,
                details={"lease_id": grant_row.lease_id, "token_accessor": token.accessor,
                         "expires_at": expires_at.isoformat(),
                         "held_for": format_duration(expires_at - now)},
            )
            view = self._view(session, self._request(session, view.id))
        self.timers.schedule_end(grant_id, expires_at)
        self._refresh_request_messages(view)
        self.notifier.audit(view, AuditAction.ISSUED,
                            f"issued, expires <!date^{int(expires_at.timestamp())}^{{time}}|"
                            f"{expires_at:%H:%M} UTC>")
        try:
            delivery = self._delivery(view, token, secret, now)
            ref = self.notifier.deliver_credentials(view, delivery)
        except (IssuerError, DeliveryError) as exc:
            log.error("delivery of request %s failed: %s", view.id, exc)
            ended = self.end_grant(grant_id, EndReason.DELIVERY_FAILED)
            state = "was revoked" if ended else "is being revoked"
            self.notifier.tell(view.requester, f"Your credentials for request #{view.id} could "
                               f"not be delivered, so the access {state}. Please try again.")
            return self.get(view.id)
        self._remember_messages(view.id, "credentials", [ref])
        with transaction(self.engine) as session:
            append_event(session, at=self.clock.now(), actor=SYSTEM_ACTOR,
                         action=AuditAction.DELIVERED, request_id=view.id, resource=view.resource,
                         details={"delivery": self.policy.delivery})
        return view

    def _delivery(
        self, view: RequestView, token: GrantToken, secret: DynamicSecret | None, now: datetime,
    ) -> CredentialDelivery:
        values: dict[str, SecretValue] = dict(secret.values) if secret else {"token": token.token}
        expires_at = token.expires_at if secret is None else min(token.expires_at,
                                                                 secret.lease_expires_at)
        notes: tuple[str, ...] = ()
        if expires_at < now + view.duration - timedelta(seconds=5):
            notes = (f"Vault capped this grant at {format_duration(expires_at - now)}, "
                     f"less than the {format_duration(view.duration)} approved.",)
        if self.policy.delivery == "dm":
            return CredentialDelivery(expires_at=expires_at, values=values, notes=notes)
        payload = {key: value.reveal() for key, value in values.items()}
        payload.update(resource=view.resource, request_id=str(view.id),
                       expires_at=expires_at.isoformat())
        wrapped = self.issuer.wrap(payload, self.policy.wrap_ttl)
        return CredentialDelivery(expires_at=expires_at, wrapping_token=wrapped,
                                  wrap_ttl=self.policy.wrap_ttl, notes=notes)

    def _fail_issue(self, view: RequestView, grant_id: int | None, problem: str) -> RequestView:
        """Mark the request failed, clean up anything half-issued, and tell both sides."""
        now = self.clock.now()
        with transaction(self.engine) as session:
            self._move(session, view.id, RequestStatus.FAILED, now, failure=problem)
            if grant_id is not None:
                grant = self._grant(session, grant_id)
                grant.status = GrantStatus.REVOKING
                grant.end_reason = EndReason.ISSUE_FAILED
                session.add(grant)
            append_event(session, at=now, actor=SYSTEM_ACTOR, action=AuditAction.FAILED,
                         request_id=view.id, resource=view.resource, details={"error": problem})
            failed = self._view(session, self._request(session, view.id))
        cleaned = grant_id is None or self.end_grant(grant_id, EndReason.ISSUE_FAILED)
        self._refresh_request_messages(failed)
        self.notifier.audit(failed, AuditAction.FAILED, f"failed: {problem}", alert=True)
        aftermath = ("Nothing was left behind." if cleaned else
                     "What was half-issued is being revoked; the audit channel follows it.")
        self.notifier.tell(failed.requester,
                           f"Request #{failed.id} for `{failed.resource}` was approved but could "
                           f"not be issued: {problem}. {aftermath}")
        if failed.decided_by:
            self.notifier.tell(failed.decided_by, f"You approved request #{failed.id}, but "
                               f"issuing failed: {problem}. The requester has been told.")
        return failed

    # -- revoke (early, at expiry, or to clean up) ------------------------------------------------

    def revoke_early(self, request_id: int, actor: str) -> RequestView:
        """``/debug-access revoke <id>`` or the Revoke button: end a grant or withdraw a request."""
        view = self.get(request_id)
        check_may_end(actor, view.requester, view.approvers)
        if view.status is RequestStatus.PENDING:
            if actor != view.requester:
                raise NotAllowed("This request is still waiting: use Deny to refuse it.")
            return self._withdraw(view)
        if view.status not in {RequestStatus.ACTIVE, RequestStatus.REVOKING}:
            raise Conflict(f"Request #{request_id} is {view.status.label}; there is nothing to "
                           "revoke.")
        with Session(self.engine) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
            grant_id = grant.id if grant else None
        if grant_id is None:
            raise Conflict(f"Request #{request_id} has no grant to revoke.")
        self.end_grant(grant_id, EndReason.REVOKED, actor=actor)
        return self.get(request_id)

    def _withdraw(self, view: RequestView) -> RequestView:
        now = self.clock.now()
        with transaction(self.engine) as session:
            claimed = session.exec(
                update(AccessRequest)
                .where(col(AccessRequest.id) == view.id,
                       col(AccessRequest.status) == RequestStatus.PENDING.value)
                .values(status=RequestStatus.WITHDRAWN.value, updated_at=now)
            ).rowcount
            if claimed != 1:
                raise self._already_decided(view.id)
            append_event(session, at=now, actor=view.requester, action=AuditAction.WITHDRAWN,
                         request_id=view.id, resource=view.resource)
            withdrawn = self._view(session, self._request(session, view.id))
        self._refresh_request_messages(withdrawn)
        self.notifier.audit(withdrawn, AuditAction.WITHDRAWN, "withdrawn by the requester")
        return withdrawn

    def end_grant(self, grant_id: int, reason: str, actor: str = SYSTEM_ACTOR) -> bool:
        """Revoke a grant in Vault, confirm it is gone, then (only then) mark it ended.

        Safe to call any number of times, from any replica: the first caller claims the grant
        atomically; others return False. On failure the grant stays REVOKING, the audit channel
        is alerted, and a retry is scheduled. Returns True when this call ended the grant.
        """
        now = self.clock.now()
        with transaction(self.engine) as session:
            claimed = session.exec(
                update(Grant)
                .where(
                    col(Grant.id) == grant_id,
                    or_(
                        col(Grant.status) == GrantStatus.ACTIVE,
                        col(Grant.status) == GrantStatus.ISSUING,
                        (col(Grant.status) == GrantStatus.REVOKING)
                        & or_(col(Grant.claimed_at).is_(None),
                              col(Grant.claimed_at) < now - CLAIM_TIMEOUT),
                    ),
                )
                .values(status=GrantStatus.REVOKING, claimed_at=now)
            ).rowcount
            if claimed != 1:
                return False
            grant = self._grant(session, grant_id)
            if grant.end_reason is None:
                grant.end_reason = reason
                grant.ended_by = actor
                session.add(grant)
            request = self._request(session, grant.request_id)
            if request.status == RequestStatus.ACTIVE.value:
                self._move(session, request.id, RequestStatus.REVOKING, now)  # type: ignore[arg-type]
            accessor, lease_id = grant.token_accessor, grant.lease_id
            end_reason = grant.end_reason or reason
            ended_by = grant.ended_by or actor
            request_id = grant.request_id
        try:
            self.issuer.revoke(accessor, lease_id)
            if not self.issuer.confirm_revoked(accessor, lease_id):
                raise IssuerError("Vault still reports the lease or token as live after revoke")
        except IssuerError as exc:
            self._revocation_failed(grant_id, request_id, str(exc))
            return False
        return self._mark_ended(grant_id, request_id, end_reason, ended_by)

    def _revocation_failed(self, grant_id: int, request_id: int, problem: str) -> None:
        now = self.clock.now()
        with transaction(self.engine) as session:
            grant = self._grant(session, grant_id)
            grant.revoke_attempts += 1
            grant.last_error = problem
            grant.claimed_at = None
            session.add(grant)
            attempts = grant.revoke_attempts
            request = self._request(session, request_id)
            append_event(session, at=now, actor=SYSTEM_ACTOR, action=AuditAction.REVOKE_FAILED,
                         request_id=request_id, resource=request.resource,
                         details={"error": problem, "attempt": attempts})
            view = self._view(session, request)
        retry_at = now + retry_delay(attempts)
        self.timers.schedule_retry(grant_id, retry_at)
        log.error("revocation of grant %s failed (attempt %s): %s", grant_id, attempts, problem)
        self.notifier.audit(
            view, AuditAction.REVOKE_FAILED,
            f"REVOCATION FAILED (attempt {attempts}): {problem}. Still live in Vault until "
            f"revoked; retrying in {format_duration(retry_at - now)}.", alert=True,
        )

    def _mark_ended(self, grant_id: int, request_id: int, reason: str, actor: str) -> bool:
        now = self.clock.now()
        with transaction(self.engine) as session:
            grant = self._grant(session, grant_id)
            grant.status = GrantStatus.REVOKED
            grant.ended_at = now
            grant.claimed_at = None
            session.add(grant)
            request = self._request(session, request_id)
            if request.status == RequestStatus.REVOKING.value:
                self._move(session, request_id, RequestStatus.ENDED, now)
            action = AuditAction.EXPIRED if reason == EndReason.EXPIRED else AuditAction.REVOKED
            append_event(session, at=now, actor=actor, action=action, request_id=request_id,
                         resource=request.resource,
                         details={"reason": reason, "lease_id": grant.lease_id,
                                  "token_accessor": grant.token_accessor,
                                  "held_for": format_duration(now - utc(grant.issued_at)),
                                  "confirmed_by_vault": True})
            view = self._view(session, self._request(session, request_id))
            credentials = [MessageRef(m.channel, m.ts) for m in session.exec(
                select(RequestMessage).where(RequestMessage.request_id == request_id,
                                             RequestMessage.kind == "credentials"))]
        for ref in credentials:
            self.notifier.close_credentials(view, ref)
        if reason in {EndReason.EXPIRED, EndReason.REVOKED}:
            who = "it expired" if reason == EndReason.EXPIRED else f"<@{actor}> revoked it"
            self.notifier.tell(view.requester, f"Your access to `{view.resource}` (request "
                               f"#{view.id}) has ended: {who}. Vault confirmed the credentials "
                               "are gone.")
        text = {EndReason.EXPIRED: "expired; Vault confirmed revocation",
                EndReason.REVOKED: f"revoked early by <@{actor}>; Vault confirmed revocation"}
        self.notifier.audit(view, action, text.get(reason, f"cleaned up ({reason}); Vault "
                                                   "confirmed revocation"))
        return True

    # -- restart ----------------------------------------------------------------------------------

    def reconcile(self) -> dict[str, int]:
        """Rebuild timers from the database and finish whatever a crash interrupted.

        Runs at start. Past-due grants are revoked now; future ones are rescheduled; grants a
        crash left half-issued are revoked and their requests failed.
        """
        now = self.clock.now()
        counts = {"expired": 0, "scheduled": 0, "retried": 0, "interrupted": 0}
        with Session(self.engine) as session:
            grants = list(session.exec(select(Grant).where(col(Grant.status).in_(
                [GrantStatus.ISSUING, GrantStatus.ACTIVE, GrantStatus.REVOKING]))))
            stranded = list(session.exec(select(AccessRequest).where(
                AccessRequest.status == RequestStatus.APPROVED.value)))
        granted = {grant.request_id for grant in grants}
        for request in stranded:
            assert request.id is not None
            if request.id not in granted:
                self._fail_issue(self.get(request.id), None,
                                 "the bot stopped while issuing; please request again")
                counts["interrupted"] += 1
        for grant in grants:
            assert grant.id is not None
            if grant.status == GrantStatus.ISSUING:
                self._fail_issue(self.get(grant.request_id), grant.id,
                                 "the bot stopped while issuing; please request again")
                counts["interrupted"] += 1
            elif grant.status == GrantStatus.REVOKING:
                claimed = utc(grant.claimed_at) if grant.claimed_at else None
                if claimed is None or claimed < now - CLAIM_TIMEOUT:
                    self.end_grant(grant.id, grant.end_reason or EndReason.EXPIRED)
                else:
                    self.timers.schedule_retry(grant.id, claimed + CLAIM_TIMEOUT)
                counts["retried"] += 1
            elif grant.expires_at is None or utc(grant.expires_at) <= now:
                self.end_grant(grant.id, EndReason.EXPIRED)
                counts["expired"] += 1
            else:
                self.timers.schedule_end(grant.id, utc(grant.expires_at))
                counts["scheduled"] += 1
        log.info("reconciled at start: %s", counts)
        return counts

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

    # -- helpers ----------------------------------------------------------------------------------

    def _resource(self, name: str) -> Resource:
        resource = self.policy.resource(name)
        if resource is None:
            raise NotFound(f"`{name}` is no longer in the policy.")
        return resource

    @staticmethod
    def _request(session: Session, request_id: int) -> AccessRequest:
        request = session.get(AccessRequest, request_id)
        if request is None:
            raise NotFound(f"There is no request #{request_id}.")
        session.refresh(request)
        return request

    @staticmethod
    def _grant(session: Session, grant_id: int) -> Grant:
        grant = session.get(Grant, grant_id)
        if grant is None:
            raise NotFound(f"There is no grant {grant_id}.")
        session.refresh(grant)
        return grant

    @staticmethod
    def _move(session: Session, request_id: int, target: RequestStatus, now: datetime,
              failure: str | None = None) -> None:
        request = AccessLifecycle._request(session, request_id)
        check_transition(RequestStatus(request.status), target)
        request.status = target.value
        request.updated_at = now
        if failure is not None:
            request.failure = failure
        session.add(request)

    def _view(self, session: Session, request: AccessRequest) -> RequestView:
        assert request.id is not None
        resource = self.policy.resource(request.resource)
        grant = session.exec(select(Grant).where(Grant.request_id == request.id)).first()
        return RequestView(
            id=request.id, requester=request.requester, resource=request.resource,
            description=resource.description if resource else "",
            duration=timedelta(seconds=request.duration_seconds), reason=request.reason,
            status=RequestStatus(request.status), created_at=utc(request.created_at),
            approvers=tuple(eligible_approvers(request.requester, resource.approvers))
            if resource else (),
            decided_by=request.decided_by,
            decided_at=utc(request.decided_at) if request.decided_at else None,
            expires_at=utc(grant.expires_at) if grant and grant.expires_at else None,
            ended_at=utc(grant.ended_at) if grant and grant.ended_at else None,
            end_reason=grant.end_reason if grant else None,
            ended_by=grant.ended_by if grant else None,
            failure=request.failure,
        )

    def _remember_messages(self, request_id: int, kind: str, refs: list[MessageRef]) -> None:
        if not refs:
            return
        with transaction(self.engine) as session:
            for ref in refs:
                session.add(RequestMessage(request_id=request_id, kind=kind, channel=ref.channel,
                                           ts=ref.ts))

    def _refresh_request_messages(self, view: RequestView) -> None:
        with Session(self.engine) as session:
            refs = [MessageRef(m.channel, m.ts) for m in session.exec(
                select(RequestMessage).where(RequestMessage.request_id == view.id,
                                             RequestMessage.kind == "approval"))]
        self.notifier.refresh_request(view, refs)
