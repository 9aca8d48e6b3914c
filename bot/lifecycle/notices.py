"""notices: messages a person must get even when Slack is down at the moment they are written.

Most of what the bot tells people is best effort (the audit row is the fact). A few messages are
not: the requester whose credentials could not be delivered, and whose access was therefore
revoked, must hear it, and Slack is by definition failing just then. Such a message is written
to the ``notice`` table (an outbox) in the transaction that records what it reports, sent at
once, and, while Slack refuses it, retried by ``send_queued`` from the timer tick
(``bot.scheduler``) on every replica until it goes out (each notice is claimed first, so two
replicas never send it twice at the same moment; at least once, not exactly once, if a sender
dies after Slack took it).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_
from sqlmodel import Session, col, select

from bot.domain.text import quote
from bot.lifecycle.edges import Edges
from bot.ports import DeliveryError
from bot.store.claims import claim
from bot.store.db import transaction
from bot.store.models import Notice

log = logging.getLogger(__name__)

# Longer than one send (slack_sdk retries a 429 a few times, waiting Retry-After each time).
NOTICE_CLAIM = timedelta(minutes=2)
NOTICE_BACKOFF = (timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=30))
# A notice Slack refused this many times is still retried, but logged as an error.
LOUD_AFTER = 10


class Notices:
    def __init__(self, edges: Edges) -> None:
        self.edges = edges

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
        now = self.edges.clock.now()
        notice = Notice(
            user=user, text=text, request_id=request_id, created_at=now, next_attempt_at=now + hold
        )
        session.add(notice)
        session.flush()
        return notice

    def rewrite(self, notice_id: int, text: str) -> None:
        """Say it better before it is sent (once the outcome it reports is known)."""
        with transaction(self.edges.engine) as session:
            claim(session, Notice, notice_id, col(Notice.sent_at).is_(None), text=text)

    def send_queued(self, only: int | None = None) -> int:
        """Send every notice that is due (or just ``only``, due or held), oldest first; stop at
        the first Slack refuses, the rest wait for the next round. Returns how many went out."""
        now = self.edges.clock.now()
        query = select(Notice.id).where(col(Notice.sent_at).is_(None))
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
                continue  # another replica has it
            if not outcome:
                break
            sent += 1
        return sent

    def _send_one(self, notice_id: int) -> bool | None:
        now = self.edges.clock.now()
        until = now + NOTICE_CLAIM
        with transaction(self.edges.engine) as session:
            free = or_(col(Notice.claimed_until).is_(None), col(Notice.claimed_until) < now)
            if not claim(
                session, Notice, notice_id, col(Notice.sent_at).is_(None), free, claimed_until=until
            ):
                return None
            notice = session.get(Notice, notice_id)
            assert notice is not None
            session.refresh(notice)
            user, text, attempts = notice.user, notice.text, notice.attempts
        mine = col(Notice.claimed_until) == until
        try:
            self.edges.notifier.send(user, text)
        except DeliveryError as exc:
            attempts += 1
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
        log.info("notice %s sent to %s", notice_id, user)
        return True
