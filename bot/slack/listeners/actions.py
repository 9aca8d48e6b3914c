"""Button clicks: Approve, Deny, Revoke now.

The button's value is only a request id; who may do what is decided again from the database
and the policy on every click, so a forged or replayed value gains nothing.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.domain.commands import parse_request_id
from bot.domain.errors import UserError
from bot.lifecycle import AccessLifecycle
from bot.slack.ids import ActionId


def _ephemeral(respond: Respond, text: str) -> None:
    respond(text=text, response_type="ephemeral", replace_original=False)


def register(app: App, lifecycle: AccessLifecycle) -> None:
    def decide(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond,
               approve: bool) -> None:
        ack()
        try:
            view = lifecycle.decide(parse_request_id(action["value"]), body["user"]["id"],
                                    approve)
        except UserError as err:
            _ephemeral(respond, f":warning: {err}")
            return
        verb = "approved" if approve else "denied"
        _ephemeral(respond, f"You {verb} request #{view.id}; it is now {view.status.label}.")

    @app.action(ActionId.APPROVE.value)
    def approve(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        decide(ack, body, action, respond, approve=True)

    @app.action(ActionId.DENY.value)
    def deny(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        decide(ack, body, action, respond, approve=False)

    @app.action(ActionId.REVOKE.value)
    def revoke(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond) -> None:
        ack()
        try:
            view = lifecycle.revoke_early(parse_request_id(action["value"]), body["user"]["id"])
        except UserError as err:
            _ephemeral(respond, f":warning: {err}")
            return
        _ephemeral(respond, f"Request #{view.id} is now {view.status.label}.")
