"""The App Home tab: where everyone stands, built from the database on every change.

For a requester: active grants with time left and Revoke / Extend, and pending requests. For an
approver: requests waiting for them with Approve / Deny. For everyone: a Request access button
and the last few decisions. For a user an admin has locked: who locked them, when and why, at
the top, and none of the buttons the lock would refuse (only Revoke stays). The builder is
pure; ``HomePublisher`` queries and publishes; ``HomeRefresher`` decides when, off the request
path.

Why a refresher: every change touches the Homes of the requester and of every approver asked,
and publishing one costs a few bounded queries and a Slack call. Done inline, a burst of
requests spent most of its time republishing the same few Homes (89% of the listener threads'
time in ``benchmarks/ack_burst.py``), ahead of the next request's own work. The refresher keeps
a set of users whose Home is out of date: a burst of changes for one user becomes one publish
(it reads the state at publish time, so nothing is missed), on its own small pool of threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from slack_sdk import WebClient

from bot.domain.digest import LockRecord
from bot.domain.durations import format_duration
from bot.domain.requests import RequestStatus
from bot.lifecycle import AccessLifecycle
from bot.mrkdwn import escape, when
from bot.policy import Policy
from bot.ports import RequestView
from bot.slack.blocks import (
    Block,
    button,
    context,
    grant_actions,
    section,
    status_line,
)
from bot.slack.ids import ActionId, BlockId
from bot.slack.notifier import SLACK_FAILURES, error_code
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

MAX_LISTED = 15  # per section; a view holds at most 100 blocks


def _request_line(view: RequestView) -> str:
    return (
        f"*#{view.id}* `{view.resource}` {format_duration(view.duration)}"
        f"{' (extension of #' + str(view.parent_id) + ')' if view.is_extension else ''} — "
        f"{escape(view.reason[:200])}"
    )


def home_view(
    user: str,
    mine: Sequence[RequestView],
    waiting: Sequence[RequestView],
    recent: Sequence[RequestView],
    policy: Policy,
    registered_key: str | None = None,
    has_passkey: bool | None = None,
    lock: LockRecord | None = None,
) -> dict[str, Any]:
    """The Home tab for ``user``; ``registered_key`` is the fingerprint of their SSH key;
    ``has_passkey`` whether they registered a passkey (None: the policy asks for none);
    ``lock`` their standing lock, if an admin locked them (buttons the lock refuses are left
    out, so the Home offers nothing that would only answer "you are locked")."""
    free = lock is None
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "debug-access"}},
    ]
    if lock is not None:
        blocks.append(_lock_banner(lock))
    blocks.append(
        section(
            "Temporary, approved access to production. Ask, and the people on call "
            "decide; access ends on its own."
        )
    )
    if free:
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.HOME_ACTIONS.value,
                "elements": [
                    button("Request access", ActionId.OPEN_REQUEST_FORM, "home", "primary")
                ],
            }
        )
    blocks.append({"type": "divider"})
    if any(res.grant.key_policy() is not None for res in policy.resources.values()):
        blocks += _ssh_key_section(registered_key, free)
    if has_passkey is not None:
        blocks += _passkey_section(has_passkey, free)
    active = [v for v in mine if v.status in {RequestStatus.ACTIVE, RequestStatus.REVOKING}]
    pending = [v for v in mine if v.status is RequestStatus.PENDING]
    blocks.append(
        section("*Your active access*" if active else "*Your active access*\nNone right now.")
    )
    for view in active[:MAX_LISTED]:
        left = f"until {when(view.expires_at)}" if view.expires_at else ""
        blocks.append(section(f"{_request_line(view)}\n{left}"))
        if view.status is RequestStatus.ACTIVE:
            blocks.append(grant_actions(view, may_extend=free))
    blocks.append(
        section("*Your pending requests*" if pending else "*Your pending requests*\nNone.")
    )
    for view in pending[:MAX_LISTED]:
        blocks.append(section(f"{_request_line(view)}\n{status_line(view)}"))
    blocks.append({"type": "divider"})
    blocks.append(
        section(
            "*Waiting for your decision*"
            if waiting
            else "*Waiting for your decision*\nNothing — thank you."
        )
    )
    for view in waiting[:MAX_LISTED]:
        blocks.append(section(f"<@{view.requester}> asks: {_request_line(view)}"))
        if not free:
            continue
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    button("Approve", ActionId.APPROVE, str(view.id), "primary"),
                    button("Deny", ActionId.DENY, str(view.id), "danger"),
                ],
            }
        )
    if recent:
        blocks.append({"type": "divider"})
        blocks.append(section("*Recent decisions*"))
        for view in recent:
            blocks.append(
                context(
                    f"#{view.id} `{view.resource}` for <@{view.requester}>: {status_line(view)}"
                )
            )
    return {"type": "home", "blocks": blocks[:100]}


def _lock_banner(lock: LockRecord) -> Block:
    """First thing a locked user sees: who locked them, since when and why (the admin's words,
    escaped), and what it stops."""
    reason = escape(" ".join(lock.reason.split()))
    return section(
        f":lock: *Your debug-access is locked* by <@{lock.locked_by}> since "
        f"{when(lock.locked_at)}.\nReason: {reason}\nUntil an admin lifts the lock you cannot "
        "ask for, extend or approve access. Talk to your security team."
    )


def _ssh_key_section(registered_key: str | None, may_change: bool = True) -> list[Block]:
    """Where a user registers the public key that SSH certificate requests sign (the button
    only when ``may_change``: a lock refuses it)."""
    state = (
        f"Requests for SSH certificates sign `{registered_key}` unless you paste another key."
        if registered_key
        else "None registered. Resources that give SSH certificates need one: register it "
        "here once, or paste it in each request."
    )
    label = "Replace SSH key" if registered_key else "Register SSH key"
    blocks: list[Block] = [section(f"*Your SSH public key*\n{state}")]
    if may_change:
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.SSH_KEY_ACTIONS.value,
                "elements": [button(label, ActionId.OPEN_SSH_KEY_FORM, "home")],
            }
        )
    return [*blocks, {"type": "divider"}]


def _passkey_section(has_passkey: bool, may_register: bool = True) -> list[Block]:
    """Where an approver registers the passkey that step-up approvals need (the button only
    when ``may_register``: a lock refuses it)."""
    if has_passkey:
        return [
            section(
                "*Your passkey*\nRegistered. Approvals that need a passkey ask you to confirm "
                "with it. Lost it? Ask a debug-access admin to remove it, then register a new one."
            ),
            {"type": "divider"},
        ]
    blocks: list[Block] = [
        section(
            "*Your passkey*\nNone registered. Some approvals count only once confirmed with "
            "your passkey: register one here (the bot sends you a link by DM)."
        )
    ]
    if may_register:
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.PASSKEY_ACTIONS.value,
                "elements": [button("Register passkey", ActionId.ENROL_PASSKEY, "home")],
            }
        )
    return [*blocks, {"type": "divider"}]


class HomePublisher:
    """Build a user's Home tab from current state and publish it."""

    def __init__(self, client: WebClient, lifecycle: AccessLifecycle) -> None:
        self.client = client
        self.lifecycle = lifecycle

    def __call__(self, user: str) -> None:
        lifecycle = self.lifecycle
        view = home_view(
            user,
            lifecycle.open_requests_of(user),
            lifecycle.waiting_for(user, limit=MAX_LISTED),
            lifecycle.recent_decisions(user),
            lifecycle.policy,
            lifecycle.registered_key_fingerprint(user),
            lifecycle.has_passkey(user) if lifecycle.policy.uses_step_up() else None,
            lifecycle.lock_of(user),
        )
        self.client.views_publish(user_id=user, view=view)


class HomeRefresher:
    """Publishes the Homes of users whose state changed, soon, once per burst, off the caller's
    thread.

    ``refresh(users)`` only marks them; ``workers`` threads publish marked users after
    ``settle`` seconds (so the changes of one use case, or of a burst, share one publish). A
    user is never published by two threads at once, and one marked again while being published
    is published again after: the last publish always reads the last change. Failures are
    logged (the next change or opening of the Home redraws it)."""

    def __init__(
        self, publish: Callable[[str], None], workers: int = 2, settle: float = 0.1
    ) -> None:
        self.publish = publish
        self.settle = settle
        self._marked: dict[str, None] = {}  # insertion-ordered: first marked, first published
        self._publishing: set[str] = set()
        self._changed = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"home-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def __call__(self, user: str) -> None:
        self.refresh([user])

    def refresh(self, users: Iterable[str]) -> None:
        with self._changed:
            for user in users:
                self._marked[user] = None
            self._changed.notify_all()

    def pending(self) -> int:
        """Users marked or being published."""
        with self._changed:
            return len(self._marked.keys() | self._publishing)

    def close(self, timeout: float = 2.0) -> None:
        """Stop: publishes in progress finish (up to ``timeout``); marked users are dropped."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> str | None:
        with self._changed:
            while not self._closed:
                user = next((u for u in self._marked if u not in self._publishing), None)
                if user is not None:
                    del self._marked[user]
                    self._publishing.add(user)
                    return user
                self._changed.wait()
            return None

    def _work(self) -> None:
        while True:
            user = self._next()
            if user is None:
                return
            try:
                time.sleep(self.settle)  # let the rest of this burst's changes arrive
                with self._changed:
                    self._marked.pop(user, None)  # they are all in this publish
                self.publish(user)
            except SLACK_FAILURES as exc:
                log.error("could not refresh the App Home of %s: %s", user, error_code(exc))
            except StoreUnavailable as exc:
                log.error("could not refresh the App Home of %s: %s", user, exc)
            except Exception:
                log.exception("could not refresh the App Home of %s", user)
            finally:
                with self._changed:
                    self._publishing.discard(user)
                    self._changed.notify_all()
