"""lock: an admin's kill switch on an account that may be compromised, and lifting it.

``/debug-access lock @user <reason>`` (or ``debug-access lock`` on the command line) takes
everything from one person at once:

* the lock row and its audit event are written first, in one transaction: from that commit on
  the user can ask for nothing, approve nothing (their earlier approvals of requests still
  waiting no longer count), is asked to approve nothing, and nothing approved for them is
  issued (``Issue`` checks before it asks Vault);
* then their active grants are revoked concurrently (each with Vault confirming, retried until
  it does, like any revocation) and their pending requests denied;
* whatever that misses (a grant delivered a moment after, a replica killed halfway) is due work
  on every replica's timer tick (``bot.lifecycle.due``) for as long as the lock stands, so the
  lock finishes its work after any crash or restart.

Locks are rows, never deleted: ``unlock`` records who lifted it and when. The digest lists
every lock still standing.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, false, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.digest import LockRecord
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.grants import GrantStatus
from bot.domain.requests import ReasonError, RequestStatus, clean_reason
from bot.lifecycle.announce import Announcer
from bot.lifecycle.edges import Edges, EndReason, Via, via_suffix
from bot.lifecycle.revoke import SETTLE_WAIT, EndGrant
from bot.lifecycle.rows import load_request
from bot.lifecycle.views import Views
from bot.logs import log_context
from bot.mrkdwn import escape, when
from bot.store.claims import grant_in, move_request, request_in
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant, UserLock, utc
from bot.store.user_locks import all_standing, standing

log = logging.getLogger(__name__)

#: Revocations a lock runs at once (each one is a few Vault calls; the rest queue).
LOCK_REVOCATIONS = 8


@dataclass(frozen=True)
class LockReport:
    """What a lock did, for the admin who placed it."""

    user: str
    grants: int
    revoked: int
    denied: int
    #: SSH certificates among the grants: ended in debug-access, but they cannot be recalled
    #: and still log in until the last of them expires (``valid_until``).
    unrecallable: int = 0
    valid_until: datetime | None = None
    #: Grants still being issued or delivered when the lock stopped waiting for them: the
    #: timers revoke each as soon as it turns active.
    in_delivery: int = 0

    @property
    def still_revoking(self) -> int:
        """Grants whose revocation Vault has not confirmed yet (retried until it does)."""
        return self.grants - self.revoked


def check_not_locked(session: Session, user: str, doing: str) -> None:
    """Raise NotAllowed when ``user`` is locked; ``doing`` says what was refused."""
    lock = standing(session, user)
    if lock is not None:
        raise NotAllowed(
            f"An admin has locked your access to debug-access, so you cannot {doing}. "
            "Talk to your security team."
        )


def refuse_locked(edges: Edges, user: str, doing: str) -> None:
    """``check_not_locked`` in a session of its own."""
    with Session(edges.engine) as session:
        check_not_locked(session, user, doing)


def locked_now(edges: Edges) -> set[str]:
    """Everyone locked now (a handful at most): left out when approvers are asked."""
    with Session(edges.engine) as session:
        return {lock.user for lock in all_standing(session)}


class LockUsers:
    def __init__(self, edges: Edges, views: Views, tell: Announcer, ending: EndGrant) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell
        self.ending = ending

    # -- the admin's commands ---------------------------------------------------------------------

    def lock(self, user: str, actor: str, reason: str, via: str = Via.SLACK) -> LockReport:
        """Lock ``user``: recorded first, then their grants revoked (Vault confirming) and their
        pending requests denied. Raises UserError when ``actor`` may not, or it stands already."""
        if not reason.strip():
            raise UserError("Say why: `/debug-access lock @user <reason>`.")
        # Cleaned like every other reason (control characters out, whitespace collapsed): it
        # goes to the audit channel, the audit trail and every digest while the lock stands.
        try:
            reason = clean_reason(reason)
        except ReasonError as err:
            raise UserError(f"{err} `/debug-access lock @user <reason>`.") from None
        now = self.edges.clock.now()
        self._check_admin(actor)
        try:
            with transaction(self.edges.engine) as session:
                session.add(
                    UserLock(
                        user=user, reason=reason, locked_by=actor, locked_via=via, locked_at=now
                    )
                )
                session.flush()
                append_event(
                    session,
                    at=now,
                    actor=actor,
                    action=AuditAction.LOCKED,
                    details={"user": user, "reason": reason, "via": via},
                )
        except IntegrityError:
            raise Conflict(f"<@{user}> is already locked.") from None
        log.warning("user %s locked by %s via %s", user, actor, via)
        # Vault first: revoking is what the lock is for; telling Slack (which may be slow or
        # down) and denying the requests still waiting come after.
        self._settle(self._of(user, RequestStatus.APPROVED))
        grant_ids = self._grants_of(user, since=now)
        in_delivery = len(
            self._grants_of(user, statuses=(GrantStatus.ISSUING, GrantStatus.DELIVERING))
        )
        revoked = self._revoke_all(grant_ids, actor)
        lasting = self._unrecallable(grant_ids, now)
        for request_id in self._of(user, RequestStatus.PENDING):
            self.deny_pending(request_id)
        # Counted from the rows, like the grants: a replica's tick may have denied some first.
        denied = self._denied_since(user, now)
        report = LockReport(
            user=user,
            grants=len(grant_ids),
            revoked=revoked,
            denied=denied,
            unrecallable=len(lasting),
            valid_until=max(lasting, default=None),
            in_delivery=in_delivery,
        )
        self.edges.notifier.audit(
            None,
            AuditAction.LOCKED.value,
            f":lock: <@{actor}> locked <@{user}>{via_suffix(via)}: {escape(reason)}. They can "
            f"neither ask nor approve until an admin unlocks them. {_summary(report)}",
            alert=True,
        )
        self.edges.notifier.home_changed([user])
        return report

    def unlock(self, user: str, actor: str, via: str = Via.SLACK) -> None:
        """Lift ``user``'s lock. An admin cannot lift their own (a locked admin is no admin)."""
        self._check_admin(actor)
        if actor == user:
            raise NotAllowed("You cannot unlock yourself; ask another admin.")
        now = self.edges.clock.now()
        with transaction(self.edges.engine) as session:
            lock = standing(session, user)
            # Lifted only if still standing: of two admins lifting it at once, one does.
            lifted = lock is not None and (
                session.exec(
                    update(UserLock)
                    .where(col(UserLock.id) == lock.id, col(UserLock.lifted_at).is_(None))
                    .values(lifted_at=now, lifted_by=actor, lifted_via=via)
                ).rowcount
                == 1
            )
            if lock is None or not lifted:
                raise Conflict(f"<@{user}> is not locked.")
            append_event(
                session,
                at=now,
                actor=actor,
                action=AuditAction.UNLOCKED,
                details={"user": user, "locked_at": lock.locked_at.isoformat(), "via": via},
            )
        log.warning("user %s unlocked by %s via %s", user, actor, via)
        self.edges.notifier.audit(
            None,
            AuditAction.UNLOCKED.value,
            f":unlock: <@{actor}> unlocked <@{user}>{via_suffix(via)}; they may ask and approve "
            "again.",
            alert=True,
        )
        self.edges.notifier.home_changed([user])

    def standing(self) -> list[UserLock]:
        """Every lock standing now, oldest first."""
        with Session(self.edges.engine) as session:
            return all_standing(session)

    def lock_of(self, user: str) -> LockRecord | None:
        """``user``'s standing lock, if any: their App Home says so."""
        with Session(self.edges.engine) as session:
            lock = standing(session, user)
            if lock is None:
                return None
            return LockRecord(lock.user, lock.locked_by, lock.reason, utc(lock.locked_at))

    # -- the work a lock leaves to the timers ----------------------------------------------------

    def deny_pending(self, request_id: int) -> bool:
        """Deny a pending request of a locked user (a lock's work, or the timers' after it)."""
        now = self.edges.clock.now()
        with log_context(request_id=request_id), transaction(self.edges.engine) as session:
            request = load_request(session, request_id)
            lock = standing(session, request.requester)
            if lock is None or not move_request(
                session,
                request_id,
                RequestStatus.DENIED,
                now,
                decided_by=lock.locked_by,
                decided_at=now,
            ):
                return False
            denied = self.views.view(session, load_request(session, request_id))
            append_event(
                session,
                at=now,
                actor=lock.locked_by,
                action=AuditAction.DENIED,
                request_id=request_id,
                resource=request.resource,
                details={"reason": "requester locked", "via": lock.locked_via},
            )
        self.tell.refresh_request_messages(denied)
        self.tell.announce(denied, AuditAction.DENIED, "denied: the requester is locked")
        return True

    def end_locked_grant(self, grant_id: int) -> bool:
        """Revoke a locked user's grant (the timers' share of a lock)."""
        with Session(self.edges.engine) as session:
            grant = session.get(Grant, grant_id)
            request = session.get(AccessRequest, grant.request_id) if grant else None
            lock = standing(session, request.requester) if request else None
        if lock is None:
            return False
        return self.ending.end_grant(grant_id, EndReason.LOCKED, lock.locked_by)

    # -- inside -----------------------------------------------------------------------------------

    def _check_admin(self, actor: str) -> None:
        self.edges.check_admin(actor)
        with Session(self.edges.engine) as session:
            check_not_locked(session, actor, "lock or unlock anyone")

    def _of(self, user: str, status: RequestStatus) -> list[int]:
        with Session(self.edges.engine) as session:
            rows = session.exec(
                select(AccessRequest.id).where(AccessRequest.requester == user, request_in(status))
            )
            return [rid for rid in rows if rid is not None]

    def _denied_since(self, user: str, since: datetime) -> int:
        with Session(self.edges.engine) as session:
            rows = session.exec(
                select(AccessRequest.id).where(
                    AccessRequest.requester == user,
                    request_in(RequestStatus.DENIED),
                    col(AccessRequest.decided_at) >= since,
                )
            )
            return len(list(rows))

    def _settle(self, being_issued: list[int]) -> None:
        """Wait for grants being issued or delivered right now to settle (their owner holds the
        request's lock until then), so that they are revoked with the rest and counted. One
        that takes longer is the timers' (it is due work once active)."""
        # One wait for them all: each is being delivered at the same time, and every active
        # grant waits for this before it is revoked.
        deadline = time.monotonic() + SETTLE_WAIT.total_seconds()
        for request_id in being_issued:
            left = timedelta(seconds=max(0.01, deadline - time.monotonic()))
            with self.edges.locks.hold(request_id, wait=left):
                pass

    def _grants_of(
        self,
        user: str,
        since: datetime | None = None,
        statuses: tuple[GrantStatus, ...] = (GrantStatus.ACTIVE, GrantStatus.REVOKING),
    ) -> list[int]:
        """``user``'s grants in ``statuses``: by default the live ones, active or being revoked
        (a revocation Vault refused earlier, or one a timer took up as soon as the lock
        committed), and with ``since`` those revoked since then too (every replica's timers
        often get there before the lock's own sweep): all are the lock's to report."""
        ended_since = (
            and_(grant_in(GrantStatus.REVOKED), col(Grant.ended_at) >= since)
            if since is not None
            else false()
        )
        with Session(self.edges.engine) as session:
            rows = session.exec(
                select(Grant.id)
                .join(AccessRequest, col(AccessRequest.id) == col(Grant.request_id))
                .where(
                    AccessRequest.requester == user,
                    or_(grant_in(*statuses), ended_since),
                )
                .order_by(col(Grant.id))
            )
            return [gid for gid in rows if gid is not None]

    def _unrecallable(self, grant_ids: list[int], now: datetime) -> list[datetime]:
        """When each of these grants that Vault cannot recall (an SSH certificate) expires,
        for those still valid."""
        with Session(self.edges.engine) as session:
            rows = session.exec(
                select(Grant.expires_at, AccessRequest.resource)
                .join(AccessRequest, col(AccessRequest.id) == col(Grant.request_id))
                .where(col(Grant.id).in_(grant_ids))
            )
            lasting = []
            for expires_at, name in rows:
                resource = self.edges.policy.resource(name)
                if resource is None or resource.grant.recallable or expires_at is None:
                    continue
                if utc(expires_at) > now:
                    lasting.append(utc(expires_at))
            return lasting

    def _revoke_all(self, grant_ids: list[int], actor: str) -> int:
        """End every grant at once (a few at a time); how many Vault confirmed now."""
        if not grant_ids:
            return 0
        # SQLite has one writer (and tests share one connection): one at a time there.
        sqlite = self.edges.engine.dialect.name == "sqlite"
        workers = 1 if sqlite else min(LOCK_REVOCATIONS, len(grant_ids))
        with ThreadPoolExecutor(workers, thread_name_prefix="lock-revoke") as pool:
            list(
                pool.map(lambda gid: self.ending.end_grant(gid, EndReason.LOCKED, actor), grant_ids)
            )
        # Counted from the rows: a grant another worker was already ending (its expiry came
        # at the same moment) counts once Vault confirmed it, whoever asked.
        with Session(self.edges.engine) as session:
            ended = session.exec(
                select(Grant.id).where(col(Grant.id).in_(grant_ids), grant_in(GrantStatus.REVOKED))
            )
            return len(list(ended))


def _summary(report: LockReport) -> str:
    parts = [
        f"{report.revoked} of {report.grants} active grant(s) revoked, Vault confirmed",
        f"{report.denied} pending request(s) denied",
    ]
    if report.still_revoking:
        parts.append(
            f"{report.still_revoking} revocation(s) not yet confirmed: retried until Vault does"
        )
    if report.in_delivery:
        parts.append(
            f"{report.in_delivery} grant(s) still being delivered: revoked as soon as delivered"
        )
    if report.unrecallable and report.valid_until is not None:
        parts.append(
            f"{report.unrecallable} SSH certificate(s) cannot be recalled: they still log in, "
            f"the last valid until {when(report.valid_until)}"
        )
    return "; ".join(parts) + "."


def lock_text(report: LockReport) -> str:
    """What the admin who placed the lock is told."""
    return f"<@{report.user}> is locked. {_summary(report)}"
