"""The request modal's submission."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.durations import DurationError
from bot.domain.errors import UserError
from bot.domain.requests import UnknownResource, validate_request
from bot.lifecycle import AccessLifecycle
from bot.slack import blocks
from bot.slack.ids import BlockId, CallbackId, InputId
from bot.slack.notifier import SLACK_FAILURES, error_code

log = logging.getLogger(__name__)


def _field(values: dict[str, Any], block: BlockId, element: InputId) -> str:
    state = values.get(block.value, {}).get(element.value, {})
    selected = state.get("selected_option")
    if selected:
        return str(selected.get("value", ""))
    return str(state.get("value") or "")


def _metadata_channel(view: dict[str, Any]) -> str | None:
    try:
        channel = json.loads(view.get("private_metadata") or "{}").get("channel")
    except (ValueError, AttributeError):
        return None
    return channel if isinstance(channel, str) else None


def _block_for(err: UserError) -> BlockId:
    """Show a validation error under the field it is about."""
    if isinstance(err, DurationError):
        return BlockId.DURATION
    if isinstance(err, UnknownResource):
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


def register(app: App, lifecycle: AccessLifecycle) -> None:
    @app.view(CallbackId.REQUEST_MODAL.value)
    def submit_request(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        resource = _field(values, BlockId.RESOURCE, InputId.RESOURCE)
        duration = _field(values, BlockId.DURATION, InputId.DURATION)
        reason = _field(values, BlockId.REASON, InputId.REASON)
        try:
            valid = validate_request(lifecycle.policy.resources, resource, duration or None, reason)
        except UserError as err:
            ack(response_action="errors", errors={_block_for(err).value: str(err)})
            return
        ack()
        channel = _metadata_channel(view)
        try:
            result = lifecycle.submit(user, valid, channel)
            text = blocks.confirmation_text(result.view, result.asked)
        except UserError as err:
            text = f":warning: {err}"
        _confirm(client, user, channel, text)

    @app.view(CallbackId.EXTEND_MODAL.value)
    def submit_extension(
        ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient
    ) -> None:
        user = body["user"]["id"]
        values = view.get("state", {}).get("values", {})
        duration = _field(values, BlockId.EXTEND_DURATION, InputId.EXTEND_DURATION)
        try:
            metadata = json.loads(view.get("private_metadata") or "{}")
            request_id = int(metadata["request_id"])
        except (ValueError, KeyError, TypeError):
            ack(
                response_action="errors",
                errors={BlockId.EXTEND_DURATION.value: "This form is out of date."},
            )
            return
        try:
            lifecycle.check_extension(request_id, user, duration)
        except UserError as err:
            ack(response_action="errors", errors={BlockId.EXTEND_DURATION.value: str(err)})
            return
        ack()  # before routing: posting to approvers and refreshing homes can take seconds
        try:
            result = lifecycle.request_extension(request_id, user, duration)
            text = blocks.confirmation_text(result.view, result.asked)
        except UserError as err:
            text = f":warning: {err}"
        _confirm(client, user, None, text)
