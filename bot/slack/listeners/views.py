"""Form submissions: the request form, the extension form and the SSH key form."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.durations import DurationError
from bot.domain.errors import UserError
from bot.domain.requests import UnknownResource, validate_request
from bot.domain.ssh_keys import SshKeyError
from bot.lifecycle import AccessLifecycle
from bot.slack import blocks
from bot.slack.blocks import DamagedForm
from bot.slack.ids import BlockId, CallbackId, InputId
from bot.slack.notifier import SLACK_FAILURES, error_code
from bot.slack.unavailable import Later

log = logging.getLogger(__name__)


def _field(values: dict[str, Any], block: BlockId, element: InputId) -> str:
    state = values.get(block.value, {}).get(element.value, {})
    selected = state.get("selected_option")
    if selected:
        return str(selected.get("value", ""))
    return str(state.get("value") or "")


def _plain(err: UserError) -> str:
    """Form errors are plain text: drop the mrkdwn emphasis our messages use elsewhere."""
    return str(err).replace("*", "").replace("`", "'")


def _block_for(err: UserError) -> BlockId:
    """Show a validation error under the field it is about."""
    if isinstance(err, SshKeyError):
        return BlockId.PUBLIC_KEY
    if isinstance(err, DurationError):
        return BlockId.DURATION
    if isinstance(err, UnknownResource | DamagedForm):
        return BlockId.RESOURCE
    return BlockId.REASON


def _confirm(client: WebClient, user: str, channel: str | None, text: str) -> None:
    """Tell the requester their form went through: in the channel they came from, else by DM."""
    try:
        if channel and not channel.startswith("D"):
            client.chat_postEphemeral(channel=channel, user=user, text=text)
        else:
            dm = client.conversations_open(users=user)["channel"]["id"]
            client.chat_postMessage(channel=dm, text=text)
    except SLACK_FAILURES as exc:
        log.error("could not confirm the form to %s: %s", user, error_code(exc))


def register(app: App, lifecycle: AccessLifecycle, publish_home: Callable[[str], None]) -> None:
    @app.view(CallbackId.REQUEST_MODAL.value)
    def submit_request(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient, later: Later
    ) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        resource = _field(values, BlockId.RESOURCE, InputId.RESOURCE)
        duration = _field(values, BlockId.DURATION, InputId.DURATION)
        reason = _field(values, BlockId.REASON, InputId.REASON)
        # Only present when the resource signs a key; never logged (it may be a private key).
        public_key = _field(values, BlockId.PUBLIC_KEY, InputId.PUBLIC_KEY) or None
        try:
            channel = blocks.metadata_channel(view)
            valid = validate_request(lifecycle.policy.resources, resource, duration or None, reason)
            lifecycle.check_public_key(user, valid.resource, public_key)
        except UserError as err:
            block = _block_for(err)
            if block is BlockId.PUBLIC_KEY and BlockId.PUBLIC_KEY.value not in values:
                block = BlockId.RESOURCE  # a form drawn before the key field was shown
            ack(response_action="errors", errors={block.value: _plain(err)})
            return
        ack()

        def carry_out() -> None:
            try:
                result = lifecycle.submit(user, valid, channel, public_key=public_key)
                text = blocks.confirmation_text(result.view, result.asked)
            except UserError as err:
                text = f":warning: {err}"
            _confirm(client, user, channel, text)

        later(carry_out)

    @app.view(CallbackId.EXTEND_MODAL.value)
    def submit_extension(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient, later: Later
    ) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        duration = _field(values, BlockId.EXTEND_DURATION, InputId.EXTEND_DURATION)
        try:
            request_id = blocks.metadata_request_id(view)
            lifecycle.check_extension(request_id, user, duration)
        except UserError as err:
            ack(response_action="errors", errors={BlockId.EXTEND_DURATION.value: _plain(err)})
            return
        ack()  # before routing: posting to approvers and refreshing homes can take seconds

        def carry_out() -> None:
            try:
                result = lifecycle.request_extension(request_id, user, duration)
                text = blocks.confirmation_text(result.view, result.asked)
            except UserError as err:
                text = f":warning: {err}"
            _confirm(client, user, None, text)

        later(carry_out)

    @app.view(CallbackId.SSH_KEY_MODAL.value)
    def register_ssh_key(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        text = _field(values, BlockId.SSH_KEY, InputId.SSH_KEY)
        try:
            lifecycle.register_ssh_key(user, text)
        except UserError as err:
            ack(response_action="errors", errors={BlockId.SSH_KEY.value: _plain(err)})
            return
        ack()
        publish_home(user)
