"""Vault issue: an approved request becomes a grant (ISSUING -> DELIVERING -> ACTIVE) and its
credentials are delivered; its ``expires_at`` and, for wrapped delivery, ``collect_by`` are
when the timers end it and check the collection (``bot.lifecycle.due``).

Delivery is a step of issuing: the grant is ACTIVE (and the request with it) only once the DM
was sent. Slack refusing it is retried, honouring Retry-After, for ``DELIVERY_WINDOW``; after
that the grant is revoked and the requester told through a notice that waits for Slack.

A failure at any step fails the request (APPROVED -> FAILED) and hands whatever Vault already
issued to ``EndGrant``, so nothing is left live. The whole issue runs under the request's lock,
so a crash at any point leaves work that the timers find (``bot.lifecycle.due``) and resolve
at once, at start or on another replica, without taking it from a live replica.

"Nothing was left behind" is said only when it is known: Vault never received the token
creation, refused it, or confirmed the revocation. When the token creation reached Vault but
its answer was lost, a token may exist that the bot cannot name; nobody holds its value, it ends
by itself at its TTL, and both sides and the audit channel are told exactly that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import NamedTuple

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
from bot.lifecycle.notices import Notices
from bot.lifecycle.revoke import EndGrant
from bot.lifecycle.rows import grant_of, load_request, move
from bot.lifecycle.views import Views
from bot.logs import log_context
from bot.metrics import ISSUE_LATENCY
from bot.mrkdwn import when
from bot.ports import CredentialDelivery, DeliveryError, MessageRef, RequestView
from bot.store.claims import claim, move_grant, request_in
from bot.store.db import StoreUnavailable, transaction
from bot.store.models import AccessRequest, Grant
from bot.store.user_locks import standing

log = logging.getLogger(__name__)

# How long before the wrapping token expires the bot checks whether it was unwrapped.
COLLECT_MARGIN = timedelta(seconds=15)
# How long Slack may refuse the credentials DM before the grant is given up and revoked: long
# enough to ride out a rate limit or a short outage, short enough that nobody holds access they
# never got. Retries wait for Slack's Retry-After, or this backoff.
DELIVERY_WINDOW = timedelta(seconds=30)
#: How long ``fail`` keeps its cleanup to itself: the timers neither retry the revocation nor
#: send the requester's notice meanwhile (it is sent, reworded, once Vault has answered). Only
#: if this process dies first do they take over, with the notice as it was first written.
CLEANUP_GRACE = timedelta(seconds=30)
DELIVERY_BACKOFF = (
    timedelta(seconds=1),
    timedelta(seconds=2),
    timedelta(seconds=4),
    timedelta(seconds=8),
)
# How long an approval waits for a request's lock that someone else holds (a second approver's
# click racing the first; a recoverer deciding the request was orphaned).
LOCK_WAIT = timedelta(seconds=10)


class Issue:
    def __init__(
        self,
        edges: Edges,
        views: Views,
        tell: Announcer,
        ending: EndGrant,
        notices: Notices,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.edges = edges
        self.issuer = edges.issuer  # named as before the split, to ease merging the grant kinds
        self.views = views
        self.tell = tell
        self.ending = ending
        self.notices = notices
        self.sleep = sleep  # between delivery attempts (a test passes one that moves its clock)

    def issue(self, view: RequestView) -> RequestView:
        """Issue an approved request in Vault, record the grant (its expiry is when it is due to
        end) and deliver the credentials. Any failure fails the request and revokes what was
        half-issued.

        All of it happens under the request's lock (``Edges.locks``), which dies with this
        process: whoever finds the request half done and gets the lock knows it is orphaned."""
        with (
            log_context(request_id=view.id),
            self.edges.locks.hold(view.id, wait=LOCK_WAIT) as mine,
        ):
            if not mine:
                log.warning("request %s is being issued by someone else; leaving it", view.id)
                return self.views.get(view.id)
            with Session(self.edges.engine) as session:
                request = load_request(session, view.id)
                started = grant_of(session, view.id) is not None
            if request.status != RequestStatus.APPROVED.value or started:
                return self.views.get(view.id)  # resolved meanwhile (by a recoverer)
            return self._issue(view, request.public_key)

    def _issue(self, view: RequestView, public_key: str | None) -> RequestView:
        resource = self.edges.resource(view.resource)
        with Session(self.edges.engine) as session:
            locked = standing(session, view.requester) is not None
        if locked:  # an admin locked them after the approval: nothing is issued
            return self.fail(view, None, "an admin locked the requester's debug-access")
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
            if exc.maybe_done:  # sent, but no answer: Vault may have made the token
                until = self.edges.clock.now() + spec.ttl
                return self.fail(view, None, str(exc), token_may_live_until=until)
            if exc.unreachable:  # never reached Vault
                return self.fail(view, None, str(exc), retry_hint=True)
            return self.fail(view, None, f"Vault refused to issue: {exc}")
        with self._revoked_unless_recorded(token), transaction(self.edges.engine) as session:
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
            # Issued, not yet delivered: DELIVERING says so until the DM is sent.
            if not move_grant(
                session, grant_id, GrantStatus.DELIVERING, lease_id=lease_id, expires_at=expires_at
            ):
                raise Conflict(f"Grant {grant_id} of request #{view.id} is no longer issuing.")
            # The view first: the append holds the audit chain's head until the commit.
            issued = self.views.view(session, load_request(session, view.id))
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
        self.tell.announce(
            issued, AuditAction.ISSUED, f"issued, expires {when(expires_at)}", homes=False
        )
        try:
            delivery = self._delivery(view, secret, now, expires_at, resource.grant.delivers_secret)
        except IssuerError as exc:
            return self.fail(
                view,
                grant_id,
                f"Vault could not wrap the credentials: {exc}",
                EndReason.DELIVERY_FAILED,
            )
        try:
            ref = self._deliver(view, delivery, deadline=now + DELIVERY_WINDOW)
        except DeliveryError as exc:
            log.error("delivery of request %s failed for good: %s", view.id, exc)
            return self.fail(view, grant_id, str(exc), EndReason.DELIVERY_FAILED)
        return self._delivered(view, grant_id, ref, delivery)

    def _deliver(
        self, view: RequestView, delivery: CredentialDelivery, deadline: datetime
    ) -> MessageRef:
        """DM the credentials, retrying while Slack refuses (waiting as long as its Retry-After
        asks, or a short backoff) until ``deadline``; then raise the last DeliveryError."""
        attempts = 0
        while True:
            try:
                return self.edges.notifier.deliver_credentials(view, delivery)
            except DeliveryError as exc:
                attempts += 1
                wait = DELIVERY_BACKOFF[min(attempts, len(DELIVERY_BACKOFF)) - 1]
                if exc.retry_after:
                    wait = max(wait, timedelta(seconds=exc.retry_after))
                if self.edges.clock.now() + wait > deadline:
                    raise
                log.warning(
                    "credentials of request %s not delivered (attempt %s): %s; retrying in %ss",
                    view.id,
                    attempts,
                    exc,
                    wait.total_seconds(),
                )
                self.sleep(wait.total_seconds())

    def _delivered(
        self, view: RequestView, grant_id: int, ref: MessageRef, delivery: CredentialDelivery
    ) -> RequestView:
        """The requester has the credentials: the grant is ACTIVE, and so is the request."""
        wrapped = delivery.wrapping_token
        accessor = wrapped.accessor if isinstance(wrapped, WrappedSecret) else None
        now = self.edges.clock.now()
        wrap_ttl = delivery.wrap_ttl or self.edges.policy.wrap_ttl
        collect_by = delivery.wrapped_at + wrap_ttl if accessor and delivery.wrapped_at else None
        with transaction(self.edges.engine) as session:
            if not move_grant(
                session, grant_id, GrantStatus.ACTIVE, wrap_accessor=accessor, collect_by=collect_by
            ):
                # Ended meanwhile (it expired, or was given up): what was sent is dead already.
                log.warning("grant %s was delivered after it stopped being delivered", grant_id)
                delivered_late = True
            else:
                delivered_late = False
                move(session, view.id, RequestStatus.ACTIVE, now)
                active = self.views.view(session, load_request(session, view.id))
                append_event(
                    session,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action=AuditAction.DELIVERED,
                    request_id=view.id,
                    resource=view.resource,
                    details={
                        "delivery": "wrapped" if accessor else "dm",
                        "collect_by": collect_by.isoformat() if collect_by else None,
                    },
                )
            if delivered_late:
                active = self.views.view(session, load_request(session, view.id))
        self.tell.remember(view.id, MessageKind.CREDENTIALS, [ref])
        if not delivered_late and active.decided_at is not None:
            ISSUE_LATENCY.observe(max(0.0, (now - active.decided_at).total_seconds()))
        if delivered_late:
            self.edges.notifier.close_credentials(active, ref)
            return active
        self.tell.refresh_request_messages(active)
        self.tell.homes_changed(active)
        return active

    @contextmanager
    def _revoked_unless_recorded(self, token: GrantToken) -> Iterator[None]:
        """Until a grant row holds ``token``'s accessor, nothing could find the token again: if
        the database is lost meanwhile, revoke it now rather than leave it live until its TTL."""
        try:
            yield
        except StoreUnavailable:
            try:
                self.issuer.revoke(token.accessor, None)
            except IssuerError as exc:
                log.error("could not revoke an unrecorded grant token: %s", exc)
            raise

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
        wrapped_at = self.edges.clock.now()
        wrapped = self.issuer.wrap(payload, self.edges.policy.wrap_ttl)
        return CredentialDelivery(
            expires_at=expires_at,
            wrapped_at=wrapped_at,
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

    def fail(
        self,
        view: RequestView,
        grant_id: int | None,
        problem: str,
        reason: str = EndReason.ISSUE_FAILED,
        *,
        token_may_live_until: datetime | None = None,
        retry_hint: bool = False,
    ) -> RequestView:
        """Mark the request failed, clean up anything half-issued, and tell both sides. The
        requester's message is a notice (``Notices``): written with the failure, so it reaches
        them even if Slack is down now (it often is when delivery failed).

        ``token_may_live_until``: the token creation may have happened in Vault although its
        answer was lost; such a token cannot be named, so it is reported, with the time it
        ends by itself, instead of claiming nothing was left behind.
        """
        problem = quote(problem, limit=300)  # Vault's words go into Slack messages
        now = self.edges.clock.now()
        details: dict[str, str] = {"error": problem, "reason": reason}
        if token_may_live_until is not None:
            details["token_may_live_until"] = token_may_live_until.isoformat()
        outcome = _Outcome(problem, reason, grant_id is not None, token_may_live_until, retry_hint)
        with transaction(self.edges.engine) as session:
            move(session, view.id, RequestStatus.FAILED, now, failure=problem)
            if grant_id is not None:
                # Revoked by this call just below; the timers take over only if it dies first.
                move_grant(
                    session,
                    grant_id,
                    GrantStatus.REVOKING,
                    end_reason=reason,
                    next_retry_at=now + CLEANUP_GRACE,
                )
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.FAILED,
                request_id=view.id,
                resource=view.resource,
                details=details,
            )
            failed = self.views.view(session, load_request(session, view.id))
            # Said as it stands now; said better below once the revocation's outcome is known.
            notice = self.notices.queue(
                session,
                view.requester,
                _failed_text(failed, outcome, None),
                view.id,
                hold=CLEANUP_GRACE,
            )
            notice_id = notice.id
        cleaned = grant_id is None or self.ending.end_grant(grant_id, reason)
        if grant_id is not None:
            assert notice_id is not None
            self.notices.rewrite(notice_id, _failed_text(failed, outcome, cleaned))
        self.notices.send_queued(only=notice_id)
        self.tell.refresh_request_messages(failed)
        unknown = _unknown_token(token_may_live_until)
        self.tell.announce(
            failed,
            AuditAction.FAILED,
            f"failed: {problem}" + (f". {unknown}" if unknown else ""),
            alert=True,
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


class _Outcome(NamedTuple):
    """What is known about a failed issue, for the requester's message."""

    problem: str
    reason: str
    issued: bool  # a grant row (and so something in Vault) existed
    token_may_live_until: datetime | None
    retry_hint: bool


def _unknown_token(until: datetime | None) -> str | None:
    """The honest sentence for a token creation the bot never recorded: its answer was lost, or
    the bot stopped before writing it down (None: not the case)."""
    if until is None:
        return None
    return (
        "Vault may have created a grant token the bot never recorded (its answer was lost, or "
        "the bot stopped first), so the bot cannot revoke it; nobody holds its value, and it "
        f"expires by itself by {when(until)}."
    )


def _failed_text(view: RequestView, outcome: _Outcome, cleaned: bool | None) -> str:
    """What the requester hears when an approved request fails. ``cleaned``: whether Vault
    confirmed that what was issued is gone (None: not known yet). "Nothing was left behind" is
    said only when Vault confirmed it, or never received anything."""
    problem = outcome.problem
    if outcome.reason == EndReason.DELIVERY_FAILED:
        state = {
            True: "was revoked (Vault confirmed it)",
            False: "is being revoked; the audit channel follows it",
            None: "is being revoked",
        }[cleaned]
        return (
            f"Your credentials for `{view.resource}` (request #{view.id}) could not be "
            f"delivered ({problem}), so the access {state}. Please request again."
        )
    unknown = _unknown_token(outcome.token_may_live_until)
    if unknown:
        aftermath = unknown
    elif not outcome.issued:
        aftermath = "Nothing was issued."
        if outcome.retry_hint:
            aftermath += " You can ask again; a new request needs a new approval."
    elif cleaned:
        aftermath = "Nothing was left behind: Vault confirmed the access is revoked."
    else:
        aftermath = "What was half-issued is being revoked; the audit channel follows it."
    return (
        f"Request #{view.id} for `{view.resource}` was approved but could "
        f"not be issued: {problem}. {aftermath}"
    )
