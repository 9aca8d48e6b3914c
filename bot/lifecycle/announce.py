"""Telling people: the audit channel (one thread per request), the approval and credential
messages kept up to date, and the App Homes of everyone involved.

Each use case follows one rule: **state first, then Slack**. The database transaction that
changes a request also appends its audit row; only after it commits does anybody hear about it.
A crash between the two loses a message, never a fact.

The approval that completes a request runs under ``deferred``: its announcements (the approval
message updated, "approved" and "issued" in the audit channel) wait until the credentials DM has
gone, so the requester's wait from the click is Vault's work and one Slack post, not five
(``benchmarks/ack_burst.py``). Only the latest update of each request's messages is sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlmodel import Session, col, select

from bot.audit import AuditAction
from bot.lifecycle.edges import Edges
from bot.ports import MessageRef, RequestView
from bot.store.db import transaction
from bot.store.models import RequestMessage

log = logging.getLogger(__name__)


class MessageKind:
    """Which Slack messages of a request are remembered, to update or thread under later."""

    APPROVAL = "approval"
    CREDENTIALS = "credentials"
    AUDIT = "audit"


class Announcer:
    def __init__(self, edges: Edges) -> None:
        self.edges = edges
        self._held = threading.local()  # this thread's held announcements, under ``deferred``

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold this thread's announcements until the block ends, then send them in order
        (a request's message updated once, to its latest state). Nested blocks join the
        outer one."""
        if getattr(self._held, "queue", None) is not None:
            yield
            return
        queue: list[tuple[int | None, Callable[[], None]]] = []
        self._held.queue = queue
        try:
            yield
        finally:
            self._held.queue = None
            self._send(queue)

    def _hold_or_send(self, refresh_of: int | None, send: Callable[[], None]) -> None:
        queue = getattr(self._held, "queue", None)
        if queue is None:
            send()
        else:
            queue.append((refresh_of, send))

    @staticmethod
    def _send(queue: list[tuple[int | None, Callable[[], None]]]) -> None:
        last_refresh = {request_id: n for n, (request_id, _) in enumerate(queue) if request_id}
        for n, (request_id, send) in enumerate(queue):
            if request_id is not None and last_refresh[request_id] != n:
                continue  # a later update of the same messages follows
            try:
                send()
            except Exception:  # the state is committed; a lost message is logged, not raised
                log.exception("could not send a held announcement")

    def refs(self, request_id: int, kind: str) -> list[MessageRef]:
        with Session(self.edges.engine) as session:
            return [
                MessageRef(m.channel, m.ts)
                for m in session.exec(
                    select(RequestMessage)
                    .where(RequestMessage.request_id == request_id, RequestMessage.kind == kind)
                    .order_by(col(RequestMessage.id))
                )
            ]

    def remember(self, request_id: int, kind: str, refs: Sequence[MessageRef]) -> None:
        if not refs:
            return
        with transaction(self.edges.engine) as session:
            for ref in refs:
                session.add(
                    RequestMessage(request_id=request_id, kind=kind, channel=ref.channel, ts=ref.ts)
                )

    def refresh_request_messages(self, view: RequestView) -> None:
        self._hold_or_send(
            view.id,
            lambda: self.edges.notifier.refresh_request(
                view, self.refs(view.id, MessageKind.APPROVAL)
            ),
        )

    def announce(
        self,
        view: RequestView,
        action: AuditAction,
        text: str,
        alert: bool = False,
        homes: bool = True,
    ) -> None:
        """Post to the audit channel, threaded under the request (an extension under the grant
        it extends), and refresh the App Home of everyone involved (``homes=False`` when the
        next step announces again at once, so each Home is published once, not twice)."""
        self._hold_or_send(None, lambda: self._announce(view, action, text, alert, homes))

    def _announce(
        self, view: RequestView, action: AuditAction, text: str, alert: bool, homes: bool
    ) -> None:
        self.post_audit(view, action.value, text, alert)
        if homes:
            self.homes_changed(view)

    def post_audit(
        self, view: RequestView, action: str, text: str, alert: bool = False, strict: bool = False
    ) -> None:
        """Post one line to the audit channel under the request's thread (starting it if there
        is none yet). ``strict``: raise DeliveryError when Slack refuses (the notice outbox,
        which tries again), instead of logging it."""
        root_id = view.parent_id or view.id
        roots = self.refs(root_id, MessageKind.AUDIT)
        post = self.edges.notifier.post_audit if strict else self.edges.notifier.audit
        posted = post(view, action, text, alert=alert, thread=roots[0] if roots else None)
        if posted is not None and not roots:
            self.remember(root_id, MessageKind.AUDIT, [posted])

    def homes_changed(self, view: RequestView, extra: Iterable[str] = ()) -> None:
        users = [view.requester, *view.approvers, *view.approved_by, *extra]
        if view.decided_by:
            users.append(view.decided_by)
        self.edges.notifier.home_changed(list(dict.fromkeys(users)))
