"""A notifier for a process that acts while Slack may be down: the command line.

The bot tells Slack what happened on a best-effort basis, because what it reports usually came
from Slack a moment ago. The command line is used when Slack is failing, and what it does
(a denial, a revocation) must still reach the requester, the audit channel and the request's
messages. ``OutboxNotifier`` tries Slack at once; whatever Slack refuses becomes a notice
(``bot.lifecycle.notices``) that the running bot's timer tick, on any replica, sends once Slack
answers. Credentials are never queued: their delivery stays the lifecycle's (delivered, or the
grant revoked and the requester told).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy import Engine
from sqlmodel import Session, select

from bot.domain.digest import Digest
from bot.domain.digest_chart import ResourceUse
from bot.domain.notices import AuditPost, NoticeKind
from bot.lifecycle.edges import SYSTEM_ACTOR
from bot.lifecycle.notices import waiting, write_notice
from bot.ports import Clock, CredentialDelivery, DeliveryError, MessageRef, Notifier, RequestView
from bot.store.db import transaction
from bot.store.models import Notice

log = logging.getLogger(__name__)


class OutboxNotifier:
    """``bot.ports.Notifier`` over another one: what Slack refuses is queued, never lost.

    ``queued`` lists what went to the outbox (kinds, in order), so the command line can say
    honestly that Slack has not been told yet."""

    def __init__(
        self, inner: Notifier, engine: Engine, clock: Clock, actor: str = SYSTEM_ACTOR
    ) -> None:
        self.inner = inner
        self.engine = engine
        self.clock = clock
        #: Named as the notice's ``user`` for kinds that are not a DM (who acted).
        self.actor = actor
        self.queued: list[str] = []

    def _queue(self, kind: str, user: str, text: str, request_id: int | None) -> None:
        with transaction(self.engine) as session:
            if kind == NoticeKind.REFRESH and _refresh_waiting(session, request_id):
                return  # one re-render from the database covers every change
            write_notice(session, self.clock.now(), user, text, request_id, kind=kind)
        self.queued.append(kind)

    # -- queued when Slack refuses ---------------------------------------------------------------

    def tell(self, user: str, text: str) -> None:
        try:
            self.inner.send(user, text)
        except DeliveryError as exc:
            log.warning("Slack refused a DM to %s (%s): queued as a notice", user, exc)
            self._queue(NoticeKind.DM, user, text, None)

    def audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        try:
            return self.inner.post_audit(view, action, text, alert, thread)
        except DeliveryError as exc:
            log.warning("Slack refused the audit post %s (%s): queued as a notice", action, exc)
            post = AuditPost(action, text, alert).dumps()
            self._queue(NoticeKind.AUDIT, self.actor, post, view.id if view else None)
            return None

    def refresh_request(self, view: RequestView, refs: Sequence[MessageRef]) -> None:
        self._update(view, refs, ())

    def close_credentials(self, view: RequestView, ref: MessageRef) -> None:
        self._update(view, (), (ref,))

    def _update(
        self, view: RequestView, approvals: Sequence[MessageRef], credentials: Sequence[MessageRef]
    ) -> None:
        try:
            self.inner.update_request(view, approvals, credentials)
        except DeliveryError as exc:
            log.warning("Slack refused to update request #%s (%s): queued", view.id, exc)
            self._queue(NoticeKind.REFRESH, self.actor, "", view.id)

    # -- as the inner notifier -------------------------------------------------------------------

    def announce_request(
        self, view: RequestView, users: Sequence[str], in_channel: bool = True
    ) -> list[MessageRef]:
        return self.inner.announce_request(view, users, in_channel)

    def deliver_credentials(self, view: RequestView, delivery: CredentialDelivery) -> MessageRef:
        return self.inner.deliver_credentials(view, delivery)

    def send(self, user: str, text: str) -> None:
        self.inner.send(user, text)

    def post_audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        return self.inner.post_audit(view, action, text, alert, thread)

    def update_request(
        self,
        view: RequestView,
        approvals: Sequence[MessageRef],
        credentials: Sequence[MessageRef] = (),
    ) -> None:
        self.inner.update_request(view, approvals, credentials)

    def home_changed(self, users: Sequence[str]) -> None:
        self.inner.home_changed(users)

    def post_digest(
        self, digest: Digest, usage: Callable[[], Sequence[ResourceUse]] | None = None
    ) -> bool:
        return self.inner.post_digest(digest, usage)


def _refresh_waiting(session: Session, request_id: int | None) -> bool:
    """Whether an unsent re-render of this request's messages is already queued."""
    query = select(Notice.id).where(
        Notice.kind == NoticeKind.REFRESH,
        Notice.request_id == request_id,
        *waiting(),
    )
    return session.exec(query).first() is not None
