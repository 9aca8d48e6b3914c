"""notices: messages a person must get even when Slack is down at the moment they are written.

Most of what the bot tells people is best effort (the audit row is the fact). A few messages are
not: the requester whose credentials could not be delivered, and whose access was therefore
revoked, must hear it, and Slack is by definition failing just then. Such a message is written
to the ``notice`` table (an outbox) in the transaction that records what it reports, sent at
once, and, while Slack refuses it, retried by ``send_queued`` from the timer tick
(``bot.scheduler``) on every replica until it goes out (each notice is claimed first, so two
replicas never send it twice at the same moment; at least once, not exactly once, if a sender
dies after Slack took it). A notice Slack refuses for good (the recipient deactivated or unknown,
the audit channel archived: ``bot.domain.notices.give_up_reason``), or has refused for a week,
is given up instead: never tried again, one audit event and one warning say so, and the notices
queued after it go out.

A notice has a kind (``bot.domain.notices.NoticeKind``): ``dm`` is the message above; ``audit``
and ``refresh`` tell Slack afterwards what the command line did while Slack was down (a post to
the audit channel, the request's messages re-rendered from the database). The command line
writes them through ``bot.lifecycle.outbox.OutboxNotifier`` when Slack refuses; the bot's timer
tick sends them like any other notice. A replica sends only the kinds it knows, and leaves the
others for one that does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_
from sqlmodel import Session, col, select

from bot.audit import AuditAction, append_event
from bot.domain.notices import AuditPost, NoticeKind, give_up_reason
from bot.domain.text import quote
from bot.lifecycle.announce import Announcer, MessageKind
from bot.lifecycle.edges import SYSTEM_ACTOR, Edges
from bot.lifecycle.views import Views
from bot.ports import DeliveryError
from bot.store.claims import claim
from bot.store.db import transaction
from bot.store.models import Notice, utc

log = logging.getLogger(__name__)

# Longer than one send (slack_sdk retries a 429 a few times, waiting Retry-After each time).
NOTICE_CLAIM = timedelta(minutes=2)
NOTICE_BACKOFF = (timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=30))
# A notice Slack refused this many times is still retried, but logged as an error.
LOUD_AFTER = 10


def waiting() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The notices still to send: neither taken by Slack nor given up."""
    return col(Notice.sent_at).is_(None), col(Notice.given_up_at).is_(None)


def write_notice(
    session: Session,
    now: datetime,
    user: str,
    text: str,
    request_id: int | None,
    kind: str = NoticeKind.DM,
    hold: timedelta = timedelta(0),
) -> Notice:
    """Add a notice to the outbox in the caller's transaction, due at ``now + hold``."""
    notice = Notice(
        user=user,
        text=text,
        request_id=request_id,
        created_at=now,
        next_attempt_at=now + hold,
        kind=kind,
    )
    session.add(notice)
    session.flush()
    return notice


class Notices:
    def __init__(self, edges: Edges, views: Views, tell: Announcer) -> None:
        self.edges = edges
        self.views = views
        self.tell = tell

    def queue(
        self,
        session: Session,
        user: str,
        text: str,
        request_id: int | None,
        hold: timedelta = timedelta(0),
    ) -> Notice:
        """Write a notice in the caller's transaction (it commits with what it reports).
        ``hold``: the caller sends it itself (``send_queued(only=…)``) once it knows more; the
        periodic sends leave it alone that long, and take it up only if the caller died."""
        return write_notice(session, self.edges.clock.now(), user, text, request_id, hold=hold)

    def rewrite(self, notice_id: int, text: str) -> None:
        """Say it better before it is sent (once the outcome it reports is known)."""
        with transaction(self.edges.engine) as session:
            claim(session, Notice, notice_id, *waiting(), text=text)

    def send_queued(self, only: int | None = None) -> int:
        """Send every notice that is due (or just ``only``, due or held), oldest first; stop at
        the first Slack refuses, the rest wait for the next round (one given up does not stop
        them). Returns how many went out."""
        now = self.edges.clock.now()
        query = select(Notice.id).where(*waiting(), col(Notice.kind).in_(NoticeKind.ALL))
        if only is not None:  # the writer's own send: whenever it is due
            query = query.where(Notice.id == only)
        else:
            query = query.where(col(Notice.next_attempt_at) <= now)
        with Session(self.edges.engine) as session:
            due = [nid for nid in session.exec(query.order_by(col(Notice.id))) if nid is not None]
        sent = 0
        for notice_id in due:
            outcome = self._send_one(notice_id)
            if outcome is None:
                continue  # another replica has it, or it was given up
            if not outcome:
                break
            sent += 1
        return sent

    def _send_one(self, notice_id: int) -> bool | None:
        """True once Slack took it (or it was set aside), False when Slack refused it for now,
        None when it was not ours to send or was given up: the round goes on."""
        now = self.edges.clock.now()
        until = now + NOTICE_CLAIM
        with transaction(self.edges.engine) as session:
            free = or_(col(Notice.claimed_until).is_(None), col(Notice.claimed_until) < now)
            if not claim(session, Notice, notice_id, *waiting(), free, claimed_until=until):
                return None
            notice = session.get(Notice, notice_id)
            assert notice is not None
            session.refresh(notice)
            user, text, attempts = notice.user, notice.text, notice.attempts
            kind, request_id, created_at = notice.kind, notice.request_id, utc(notice.created_at)
        mine = col(Notice.claimed_until) == until
        try:
            self._deliver(kind, user, text, request_id)
        except ValueError as exc:  # a row that can never be sent: set it aside, loudly
            log.error("notice %s (%s) cannot be sent, set aside: %s", notice_id, kind, exc)
            with transaction(self.edges.engine) as session:
                claim(
                    session,
                    Notice,
                    notice_id,
                    mine,
                    claimed_until=None,
                    sent_at=self.edges.clock.now(),
                    last_error=quote(f"set aside: {exc}", limit=190),
                )
            return True
        except DeliveryError as exc:
            attempts += 1
            reason = give_up_reason(kind, exc.code, created_at, self.edges.clock.now())
            if reason is not None:
                self._give_up(notice_id, mine, kind, user, request_id, attempts, reason, exc)
                return None
            wait = NOTICE_BACKOFF[min(attempts, len(NOTICE_BACKOFF)) - 1]
            if exc.retry_after:
                wait = max(wait, timedelta(seconds=exc.retry_after))
            with transaction(self.edges.engine) as session:
                claim(
                    session,
                    Notice,
                    notice_id,
                    mine,
                    claimed_until=None,
                    attempts=attempts,
                    next_attempt_at=self.edges.clock.now() + wait,
                    last_error=quote(str(exc), limit=200),
                )
            level = logging.ERROR if attempts >= LOUD_AFTER else logging.WARNING
            log.log(
                level, "notice %s to %s not sent (attempt %s): %s", notice_id, user, attempts, exc
            )
            return False
        with transaction(self.edges.engine) as session:
            sent_at = self.edges.clock.now()
            claim(session, Notice, notice_id, mine, claimed_until=None, sent_at=sent_at)
        log.info("notice %s (%s) sent for %s", notice_id, kind, user)
        return True

    def _give_up(
        self,
        notice_id: int,
        mine: ColumnElement[bool],
        kind: str,
        user: str,
        request_id: int | None,
        attempts: int,
        reason: str,
        exc: DeliveryError,
    ) -> None:
        """Never try this notice again, and say so where someone will look: the audit trail
        (with the recipient, never the text) and one warning."""
        with transaction(self.edges.engine) as session:
            now = self.edges.clock.now()
            if not claim(
                session,
                Notice,
                notice_id,
                mine,
                claimed_until=None,
                attempts=attempts,
                given_up_at=now,
                last_error=quote(str(exc), limit=200),
            ):
                return  # our claim lapsed and another replica has it now
            append_event(
                session,
                at=now,
                actor=SYSTEM_ACTOR,
                action=AuditAction.NOTICE_GIVEN_UP,
                request_id=request_id,
                details={
                    "notice": notice_id,
                    "kind": kind,
                    "recipient": user,
                    "reason": reason,
                    "attempts": attempts,
                },
            )
        log.warning(
            "notice %s (%s) to %s given up after %s attempts: %s",
            notice_id,
            kind,
            user,
            attempts,
            reason,
        )

    def _deliver(self, kind: str, user: str, text: str, request_id: int | None) -> None:
        """Do what the notice says; DeliveryError when Slack refused (tried again later),
        ValueError when the row can never be sent."""
        if kind == NoticeKind.DM:
            self.edges.notifier.send(user, text)
            return
        if kind == NoticeKind.AUDIT and request_id is None:  # about a person (a lock)
            post = AuditPost.loads(text)
            self.edges.notifier.post_audit(None, post.action, post.text, post.alert)
            return
        if request_id is None:
            raise ValueError(f"a {kind} notice needs a request")
        view = self.views.get(request_id)
        if kind == NoticeKind.AUDIT:
            post = AuditPost.loads(text)
            self.tell.post_audit(view, post.action, post.text, post.alert, strict=True)
            return
        # REFRESH: every message of the request, as the database says it is now.
        ended = not view.status.is_open
        self.edges.notifier.update_request(
            view,
            self.tell.refs(request_id, MessageKind.APPROVAL),
            self.tell.refs(request_id, MessageKind.CREDENTIALS) if ended else (),
        )
        self.tell.homes_changed(view)
