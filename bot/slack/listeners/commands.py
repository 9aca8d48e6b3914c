"""``/debug-access`` and its subcommands."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.commands import (
    ExtendGrant,
    ListMine,
    LockUser,
    OpenRequestForm,
    RequestAccess,
    RevokeGrant,
    ShowHelp,
    UnlockUser,
    parse_command,
)
from bot.domain.errors import UserError
from bot.domain.requests import ValidRequest, validate_request
from bot.lifecycle import AccessLifecycle
from bot.lifecycle.lock import lock_text
from bot.slack import blocks
from bot.slack.ids import COMMAND
from bot.slack.unavailable import Later

log = logging.getLogger(__name__)


def register(app: App, lifecycle: AccessLifecycle) -> None:
    @app.command(COMMAND)
    def debug_access(
        ack: Ack,
        command: dict[str, Any],
        respond: Respond,
        client: WebClient,
        later: Later,
    ) -> None:
        policy = lifecycle.policy
        try:
            intent = parse_command(command.get("text", ""))
            valid = (
                validate_request(
                    policy.resources, intent.resource, intent.duration_text, intent.reason
                )
                if isinstance(intent, RequestAccess)
                else None
            )
        except UserError as err:
            ack(text=f":warning: {err}")
            return
        if isinstance(intent, ShowHelp):
            ack(text=blocks.help_text(policy))
            return
        if isinstance(intent, OpenRequestForm):
            ack()  # the trigger_id lives three seconds: open the modal before anything slow
            client.views_open(
                trigger_id=command["trigger_id"],
                view=blocks.request_modal(policy, command.get("channel_id")),
            )
            return
        ack()
        later(lambda: _carry_out(lifecycle, intent, valid, command, respond))


def _carry_out(
    lifecycle: AccessLifecycle,
    intent: object,
    valid: ValidRequest | None,
    command: dict[str, Any],
    respond: Respond,
) -> None:
    """The work of a subcommand after its ack, answered on its response_url."""
    user = command["user_id"]
    try:
        if isinstance(intent, ListMine):
            respond(text=blocks.list_message(lifecycle.open_requests_of(user)))
        elif isinstance(intent, RevokeGrant):
            view = lifecycle.revoke_early(intent.request_id, user)
            respond(text=blocks.revoked_text(view))
        elif isinstance(intent, ExtendGrant):
            result = lifecycle.request_extension(intent.request_id, user, intent.duration_text)
            respond(text=blocks.confirmation_text(result.view, result.asked))
        elif (
            isinstance(intent, RequestAccess)
            and valid is not None
            and intent.break_glass
            and lifecycle.break_glass_needs_step_up(valid.resource)
        ):
            # Nothing is created yet: the requester confirms on the passkey page first.
            respond(
                text=lifecycle.start_break_glass_step_up(user, valid, command.get("channel_id"))
            )
        elif isinstance(intent, RequestAccess) and valid is not None:
            result = lifecycle.submit(
                user, valid, command.get("channel_id"), break_glass=intent.break_glass
            )
            respond(text=blocks.confirmation_text(result.view, result.asked))
        elif isinstance(intent, LockUser):
            respond(text=lock_text(lifecycle.lock_user(intent.user, user, intent.reason)))
        elif isinstance(intent, UnlockUser):
            lifecycle.unlock_user(intent.user, user)
            respond(text=f"<@{intent.user}> is unlocked: they may ask and approve again.")
    except UserError as err:
        respond(text=f":warning: {err}")
