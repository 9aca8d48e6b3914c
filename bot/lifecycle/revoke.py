"""revoke: end a grant (at expiry, early, or to clean up), and retry until Vault confirms.

Fail closed throughout: a grant is marked ended only after Vault confirms the lease and the
token are gone; a revocation that fails stays REVOKING, is due again after a backoff
(``next_retry_at``, see ``bot.lifecycle.due``) and raised in the audit channel until it
succeeds. The first failure alerts at once, whatever it looks like (refused, reset, or a Vault
that hangs until the call's timeout). While Vault does not answer at all, the
retry comes every few seconds, so the grant ends within seconds of Vault's return; a Vault that
answers with an error is retried with backoff. Retries repeat the alert at attempts 1, 2, 4,
8... (and when the failure changes), not every few seconds.

Running ``end_grant`` twice, from two replicas, is harmless: the first claims the grant
atomically (ACTIVE/ISSUING/DELIVERING -> REVOKING, or a stale REVOKING claim taken over), and
writes the outcome only while the claim is still its own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.durations import format_duration
from bot.domain.errors import Conflict, NotAllowed
from bot.domain.grants import GrantStatus
from bot.domain.permissions import check_may_end, check_may_use_command_line
from bot.domain.requests import RequestStatus
from bot.domain.text import quote
from bot.issuer import IssuerError
from bot.lifecycle.announce import Announcer, MessageKind
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges, EndReason, Via, via_details, via_suffix
from bot.lifecycle.rows import load_grant, load_request
from bot.lifecycle.views import Views
from bot.lifecycle.withdraw import Withdraw
from bot.logs import log_context
from bot.mrkdwn import when
from bot.ports import RequestView
from bot.store.claims import claim, move_grant, move_request
from bot.store.db import transaction
from bot.store.models import Grant, utc

log = logging.getLogger(__name__)

# Longer than the worst case of one revoke + confirm (retried calls, each with VAULT_TIMEOUT),
# so a second caller never takes over a revocation that is still running.
CLAIM_TIMEOUT = timedelta(minutes=5)
#: How long Revoke waits for a grant still being delivered to turn active (see ``RevokeEarly``).
SETTLE_WAIT = timedelta(seconds=10)
RETRY_BACKOFF = (
    timedelta(seconds=15),
    timedelta(seconds=30),
    timedelta(minutes=1),
    timedelta(minutes=2),
    timedelta(minutes=5),
    timedelta(minutes=10),
)


#: Retry interval while Vault does not answer: trying costs one connection or one timeout.
UNREACHABLE_RETRY = timedelta(seconds=5)


def retry_delay(attempts: int, unreachable: bool = False) -> timedelta:
    """Backoff for revocation retries: 15 s doubling up to 10 min, then every 10 min; every
    few seconds while Vault does not answer, to revoke within seconds of its return."""
    if unreachable:
        return UNREACHABLE_RETRY
    return RETRY_BACKOFF[min(max(attempts, 1), len(RETRY_BACKOFF)) - 1]


def worth_telling(attempts: int, problem: str, last_problem: str | None) -> bool:
    """Alert (and audit) the first failure, then attempts 2, 4, 8..., and any new failure."""
    return attempts & (attempts - 1) == 0 or problem != last_problem


class EndGrant:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def end_grant(
        self, grant_id: int, reason: str, actor: str = SYSTEM_ACTOR, *, via: str = Via.SLACK
    ) -> bool:
        """Revoke a grant in Vault, confirm it is gone, then (only then) mark it ended.

        Safe to call any number of times, from any replica: the first caller claims the grant
        atomically; others return False. On failure the grant stays REVOKING, the audit channel
        is alerted, and the retry is due after a backoff. Returns True when this call ended the
        grant. ``via``: where the person who ended it acted (the audit event says so when it
        was not Slack; a retry after a failed revocation is the bot's own, and does not).
        """
        with log_context(grant_id=grant_id):
            return self._end_grant(grant_id, reason, actor, via)

    def _end_grant(self, grant_id: int, reason: str, actor: str, via: str) -> bool:
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            # Only REVOKING grants carry a claim: an unclaimed one is free to take, and so is a
            # stale one (its owner died mid-revocation): the REVOKING -> REVOKING re-claim.
            unclaimed = or_(
                col(Grant.claimed_at).is_(None), col(Grant.claimed_at) < now - CLAIM_TIMEOUT
            )
            if not move_grant(session, grant_id, GrantStatus.REVOKING, unclaimed, claimed_at=now):
                return False
            grant = load_grant(session, grant_id)
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
            self.edges.issuer.revoke(accessor, lease_id)
            if not self.edges.issuer.confirm_revoked(accessor, lease_id):
                raise IssuerError("Vault still reports the lease or token as live after revoke")
        except IssuerError as exc:
            self._revocation_failed(
                grant_id, request_id, str(exc), held_since=now, unreachable=exc.unreachable
            )
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
        return self._mark_ended(grant_id, request_id, end_reason, ended_by, now, via)

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
        self,
        grant_id: int,
        request_id: int,
        problem: str,
        held_since: datetime,
        unreachable: bool = False,
    ) -> None:
        problem = quote(problem, limit=300)
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            last_problem = load_grant(session, grant_id).last_error
            if not self._release(
                session,
                grant_id,
                held_since,
                GrantStatus.REVOKING,
                last_error=problem,
                revoke_attempts=Grant.revoke_attempts + 1,
            ):
                return
            attempts = load_grant(session, grant_id).revoke_attempts
            retry_at = now + retry_delay(attempts, unreachable)
            claim(session, Grant, grant_id, next_retry_at=retry_at)
            request = load_request(session, request_id)
            tell = worth_telling(attempts, problem, last_problem)
            if tell:
                append_event(
                    session,
                    at=now,
                    actor=SYSTEM_ACTOR,
                    action=AuditAction.REVOKE_FAILED,
                    request_id=request_id,
                    resource=request.resource,
                    details={"error": problem, "attempt": attempts},
                )
            view = self.views.view(session, request)
        log.error("revocation of grant %s failed (attempt %s): %s", grant_id, attempts, problem)
        if not tell:
            return
        again = (
            f"retrying every {format_duration(retry_at - now)} until Vault answers"
            if unreachable
            else f"retrying in {format_duration(retry_at - now)}"
        )
        self.tell.announce(
            view,
            AuditAction.REVOKE_FAILED,
            f"REVOCATION FAILED (attempt {attempts}), failing to revoke: {problem}. Still live "
            f"in Vault until revoked; {again}.",
            alert=True,
        )

    def _mark_ended(
        self,
        grant_id: int,
        request_id: int,
        reason: str,
        actor: str,
        held_since: datetime,
        via: str = Via.SLACK,
    ) -> bool:
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            if not self._release(session, grant_id, held_since, GrantStatus.REVOKED, ended_at=now):
                return False
            grant = load_grant(session, grant_id)
            request = load_request(session, request_id)
            resource = self.edges.policy.resource(request.resource)
            recallable = resource is None or resource.grant.recallable
            # An access request ends with its grant; an extension's own ENDED is not ours.
            move_request(
                session, request_id, RequestStatus.ENDED, now, only_from=[RequestStatus.REVOKING]
            )
            action = AuditAction.EXPIRED if reason == EndReason.EXPIRED else AuditAction.REVOKED
            # Read what Slack will be told before appending: the append locks the audit chain's
            # head until the commit, and every other writer queues behind that lock.
            view = self.views.view(session, load_request(session, request_id))
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
                    # False: what was issued (an SSH certificate) lives on until it expires.
                    "recalled": recallable,
                    **via_details(via),
                },
            )
        for ref in self.tell.refs(request_id, MessageKind.CREDENTIALS):
            self.edges.notifier.close_credentials(view, ref)
        if reason == EndReason.NOT_COLLECTED:
            self.edges.notifier.tell(
                view.requester,
                f"Your credentials for `{view.resource}` (request "
                f"#{view.id}) were not unwrapped in time, so the access was "
                "revoked. Ask again when you are ready to use it.",
            )
        if reason in {EndReason.EXPIRED, EndReason.REVOKED, EndReason.LOCKED}:
            self.edges.notifier.tell(view.requester, _ended_text(view, reason, actor))
        text = {
            EndReason.NOT_COLLECTED: "credentials never unwrapped, so revoked; Vault "
            "confirmed revocation",
            EndReason.EXPIRED: "expired; Vault confirmed revocation",
            EndReason.REVOKED: f"revoked early by <@{actor}>{via_suffix(via)}; Vault confirmed "
            "revocation",
            EndReason.LOCKED: f"revoked: <@{actor}> locked the requester{via_suffix(via)}; Vault "
            "confirmed revocation",
        }.get(reason, f"cleaned up ({reason}); Vault confirmed revocation")
        if view.ends_by_expiry_only and reason != EndReason.EXPIRED:
            text += f", but {_STAYS_VALID.format(until=_until(view))}"
        self.tell.announce(view, action, text)
        return True


_STAYS_VALID = (
    "the SSH certificate cannot be recalled: it stays valid until {until}, when it expires"
)


def _until(view: RequestView) -> str:
    return when(view.expires_at) if view.expires_at else "its expiry"


def _ended_text(view: RequestView, reason: str, actor: str) -> str:
    """What the requester hears when their grant ends, true to what ending it did."""
    head = f"Your access to `{view.resource}` (request #{view.id})"
    if not view.ends_by_expiry_only:
        who = {
            EndReason.EXPIRED: "it expired",
            EndReason.LOCKED: f"<@{actor}> locked your debug-access",
        }.get(reason, f"<@{actor}> revoked it")
        return f"{head} has ended: {who}. Vault confirmed the credentials are gone."
    if reason == EndReason.EXPIRED:
        return f"{head} has ended: the SSH certificate expired and no longer logs in."
    return (
        f"{head} was ended in debug-access by <@{actor}>, but "
        f"{_STAYS_VALID.format(until=_until(view))}. Delete it if you no longer need it."
    )


class RevokeEarly:
    """``/debug-access revoke <id>`` or the Revoke button: the requester or an approver ends a
    grant; the requester may also take back a request still waiting."""

    def __init__(self, edges: Edges, views: Views, ending: EndGrant, withdrawal: Withdraw) -> None:
        self.edges = edges
        self.views = views
        self.ending = ending
        self.withdrawal = withdrawal

    def revoke_early(self, request_id: int, actor: str, *, via: str = Via.SLACK) -> RequestView:
        """``/debug-access revoke <id>`` or the Revoke button: end a grant or withdraw a request.

        From the command line (``via=Via.CLI``) only an admin may, and an admin may end any
        grant (``check_may_end``'s ``admin``), but not withdraw someone else's waiting request
        (that is a denial, with its own rule)."""
        admin = False
        if via == Via.CLI:
            admin = self.edges.is_admin(actor)
            check_may_use_command_line(actor, admin)
        view = self.views.get(request_id)
        resource = self.edges.policy.resource(view.resource)
        approver = resource is not None and self.edges.approvers.may_approve(
            actor, resource.approvers, view.requester, self.edges.clock.now()
        )
        check_may_end(actor, view.requester, [actor] if approver else [], admin=admin)
        if view.status is RequestStatus.APPROVED:
            # Still being issued or delivered: Revoke clicked on the DM the moment it arrived,
            # before the commit that makes it active. Its owner holds the request's lock until
            # then; wait for that, and look again.
            with self.edges.locks.hold(request_id, wait=SETTLE_WAIT):
                view = self.views.get(request_id)
        if view.status is RequestStatus.PENDING:
            if actor != view.requester:
                raise NotAllowed("This request is still waiting: use Deny to refuse it.")
            return self.withdrawal.withdraw(view)
        if view.status not in {RequestStatus.ACTIVE, RequestStatus.REVOKING}:
            raise Conflict(
                f"Request #{request_id} is {view.status.label}; there is nothing to revoke."
            )
        with Session(self.edges.engine) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == request_id)).first()
            grant_id = grant.id if grant else None
        if grant_id is None:
            raise Conflict(f"Request #{request_id} has no grant to revoke.")
        self.ending.end_grant(grant_id, EndReason.REVOKED, actor=actor, via=via)
        return self.views.get(request_id)
