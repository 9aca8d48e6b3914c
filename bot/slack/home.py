"""The App Home tab: where everyone stands, built from the database on every change.

For a requester: active grants with time left and Revoke / Extend, and pending requests. For an
approver: requests waiting for them with Approve / Deny. For everyone: a Request access button
and the last few decisions. The builder is pure; ``HomePublisher`` queries and publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slack_sdk import WebClient

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
) -> dict[str, Any]:
    """The Home tab for ``user``; ``registered_key`` is the fingerprint of their SSH key."""
    blocks: list[Block] = [
        {"type": "header", "text": {"type": "plain_text", "text": "debug-access"}},
        section(
            "Temporary, approved access to production. Ask, and the people on call "
            "decide; access ends on its own."
        ),
        {
            "type": "actions",
            "block_id": BlockId.HOME_ACTIONS.value,
            "elements": [button("Request access", ActionId.OPEN_REQUEST_FORM, "home", "primary")],
        },
        {"type": "divider"},
    ]
    if any(res.grant.key_policy() is not None for res in policy.resources.values()):
        blocks += _ssh_key_section(registered_key)
    active = [v for v in mine if v.status in {RequestStatus.ACTIVE, RequestStatus.REVOKING}]
    pending = [v for v in mine if v.status is RequestStatus.PENDING]
    blocks.append(
        section("*Your active access*" if active else "*Your active access*\nNone right now.")
    )
    for view in active[:MAX_LISTED]:
        left = f"until {when(view.expires_at)}" if view.expires_at else ""
        blocks.append(section(f"{_request_line(view)}\n{left}"))
        if view.status is RequestStatus.ACTIVE:
            blocks.append(grant_actions(view))
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


def _ssh_key_section(registered_key: str | None) -> list[Block]:
    """Where a user registers the public key that SSH certificate requests sign."""
    state = (
        f"Requests for SSH certificates sign `{registered_key}` unless you paste another key."
        if registered_key
        else "None registered. Resources that give SSH certificates need one: register it "
        "here once, or paste it in each request."
    )
    label = "Replace SSH key" if registered_key else "Register SSH key"
    return [
        section(f"*Your SSH public key*\n{state}"),
        {
            "type": "actions",
            "block_id": BlockId.SSH_KEY_ACTIONS.value,
            "elements": [button(label, ActionId.OPEN_SSH_KEY_FORM, "home")],
        },
        {"type": "divider"},
    ]


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
            lifecycle.waiting_for(user),
            lifecycle.recent_decisions(user),
            lifecycle.policy,
            lifecycle.registered_key_fingerprint(user),
        )
        self.client.views_publish(user_id=user, view=view)
