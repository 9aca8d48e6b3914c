"""Button clicks: Approve, Deny, Reviewed, Revoke now, Extend, Request access, Register SSH key
and Register passkey (App Home), and choosing a resource in the request form (which redraws it).

Approve on a resource whose policy asks for passkey step-up records nothing yet: it answers the
clicker alone with a link to the passkey page (``bot.lifecycle.step_up``).

The button's value is only a request id; who may do what is decided again from the database
and the policy on every click, so a forged or replayed value gains nothing. Clicks in a message
answer the clicker ephemerally through its response_url; clicks in the App Home have none, so
failures arrive by DM and the Home tab itself shows the new state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.commands import parse_request_id
from bot.domain.durations import format_duration
from bot.domain.errors import UserError
from bot.domain.requests import RequestStatus
from bot.lifecycle import AccessLifecycle
from bot.ports import RequestView
from bot.slack import blocks
from bot.slack.ids import ActionId, InputId
from bot.slack.unavailable import Later


def _reply(
    body: dict[str, Any], respond: Respond, client: WebClient, text: str, problem: bool
) -> None:
    if body.get("response_url"):
        respond(text=text, response_type="ephemeral", replace_original=False)
    elif problem:
        channel = client.conversations_open(users=body["user"]["id"])["channel"]["id"]
        client.chat_postMessage(channel=channel, text=text)


def _run(
    later: Later,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Respond,
    client: WebClient,
    step: Callable[[int, str], RequestView],
    done: Callable[[RequestView], str],
) -> None:
    """After the ack, off the listener thread (``later``): run ``step`` for the clicked
    request and tell the clicker how it went."""

    def carry_out() -> None:
        try:
            view = step(parse_request_id(action["value"]), body["user"]["id"])
        except UserError as err:
            _reply(body, respond, client, f":warning: {err}", problem=True)
            return
        _reply(body, respond, client, done(view), problem=False)

    later(carry_out)


def _decided(verb: str) -> Callable[[RequestView], str]:
    def text(view: RequestView) -> str:
        if view.status is RequestStatus.PENDING:
            return (
                f"You {verb} request #{view.id}; it still needs "
                f"{view.approvals_required - len(view.approved_by)} more approval(s)."
            )
        return f"You {verb} request #{view.id}; it is now {view.status.label}."

    return text


def register(app: App, lifecycle: AccessLifecycle) -> None:
    @app.action(ActionId.APPROVE.value)
    def approve(
        ack: Ack,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        client: WebClient,
        later: Later,
    ) -> None:
        ack()

        def carry_out() -> None:
            # A step-up resource: the click only earns a link to the passkey page, answered to
            # the clicker alone (ephemeral, or by DM from the App Home).
            user = body["user"]["id"]
            try:
                request_id = parse_request_id(action["value"])
                if lifecycle.approval_needs_step_up(request_id):
                    _reply(body, respond, client, lifecycle.start_step_up(request_id, user), True)
                    return
                view = lifecycle.decide(request_id, user, approve=True)
            except UserError as err:
                _reply(body, respond, client, f":warning: {err}", problem=True)
                return
            _reply(body, respond, client, _decided("approved")(view), problem=False)

        later(carry_out)

    @app.action(ActionId.DENY.value)
    def deny(
        ack: Ack,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        client: WebClient,
        later: Later,
    ) -> None:
        ack()
        _run(
            later,
            body,
            action,
            respond,
            client,
            lambda rid, user: lifecycle.decide(rid, user, approve=False),
            _decided("denied"),
        )

    @app.action(ActionId.REVIEW.value)
    def review(
        ack: Ack,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        client: WebClient,
        later: Later,
    ) -> None:
        ack()
        _run(
            later,
            body,
            action,
            respond,
            client,
            lifecycle.review,
            lambda view: f"You reviewed break-glass access #{view.id}.",
        )

    @app.action(ActionId.REVOKE.value)
    def revoke(
        ack: Ack,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        client: WebClient,
        later: Later,
    ) -> None:
        ack()
        _run(
            later,
            body,
            action,
            respond,
            client,
            lifecycle.revoke_early,
            blocks.revoked_text,
        )

    @app.action(ActionId.EXTEND.value)
    def extend(
        ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient
    ) -> None:
        ack()  # the trigger_id lives three seconds: open the form before anything slow
        try:
            # Only for the requester's own live grant: the form shows the grant, so someone
            # else's click (a forwarded message, a forged value) is refused before it opens.
            view, resource = lifecycle.check_may_extend(
                parse_request_id(action["value"]), body["user"]["id"]
            )
        except UserError as err:
            _reply(body, respond, client, f":warning: {err}", problem=True)
            return
        limit = format_duration(resource.max_duration)
        client.views_open(trigger_id=body["trigger_id"], view=blocks.extend_modal(view, limit))

    @app.action(ActionId.OPEN_REQUEST_FORM.value)
    def open_form(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.views_open(
            trigger_id=body["trigger_id"], view=blocks.request_modal(lifecycle.policy, None)
        )

    @app.action(InputId.RESOURCE.value)
    def resource_chosen(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        """Redraw the form for the chosen resource: with an SSH key field, or without one."""
        ack()
        form = body.get("view") or {}
        chosen = (body.get("actions") or [{}])[0].get("selected_option") or {}
        user = body["user"]["id"]
        try:
            channel = blocks.metadata_channel(form)
        except UserError:
            channel = None  # a damaged origin is dropped: the receipt then comes by DM
        client.views_update(
            view_id=form["id"],
            hash=form.get("hash"),
            view=blocks.request_modal(
                lifecycle.policy,
                channel,
                selected=str(chosen.get("value") or "") or None,
                registered_key=lifecycle.registered_key_fingerprint(user),
            ),
        )

    @app.action(ActionId.ENROL_PASSKEY.value)
    def enrol_passkey(ack: Ack, body: dict[str, Any], client: WebClient, later: Later) -> None:
        """A fresh single-use enrolment link, by DM to the clicker alone."""
        ack()
        user = body["user"]["id"]

        def send() -> None:
            try:
                text = lifecycle.passkey_enrolment(user)
            except UserError as err:
                text = f":warning: {err}"
            channel = client.conversations_open(users=user)["channel"]["id"]
            client.chat_postMessage(channel=channel, text=text)

        later(send)

    @app.action(ActionId.OPEN_SSH_KEY_FORM.value)
    def open_ssh_key_form(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        fingerprint = lifecycle.registered_key_fingerprint(body["user"]["id"])
        client.views_open(trigger_id=body["trigger_id"], view=blocks.ssh_key_modal(fingerprint))
