"""Pure Block Kit builders: a ``RequestView`` in, a Slack message or view (dicts) out.

No I/O here, so every message is unit-tested for content, escaping and Slack's size limits.
All user-written text (the reason) passes through ``escape``; ids and names from the policy are
validated at load time and safe as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.domain.durations import format_duration
from bot.domain.errors import UserError
from bot.domain.identifiers import is_channel_id, is_row_id
from bot.domain.requests import MAX_REASON_LENGTH, RequestStatus
from bot.mrkdwn import escape as escape  # re-exported for the builders' callers
from bot.mrkdwn import when as when
from bot.policy import Policy
from bot.ports import CredentialDelivery, RequestView
from bot.slack.ids import COMMAND, ActionId, BlockId, CallbackId, InputId

Block = dict[str, Any]
SECTION_TEXT_LIMIT = 3000
# Slack's limit for a plain_text_input; a 16384-bit RSA public key line is about 2.8 KB.
PUBLIC_KEY_INPUT_LIMIT = 3000
EXPIRY_ONLY_NOTE = (
    ":hourglass: *Ends by expiry only.* An SSH certificate cannot be recalled once signed: "
    "*Revoke now* ends the grant in debug-access and the audit trail, not on the hosts."
)


def section(text: str) -> Block:
    if len(text) > SECTION_TEXT_LIMIT:
        text = text[: SECTION_TEXT_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def button(text: str, action_id: ActionId, value: str, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id.value,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def _summary(view: RequestView) -> Block:
    duration = (
        f"{format_duration(view.duration)} more on #{view.parent_id}"
        if view.is_extension
        else format_duration(view.duration)
    )
    fields = [
        f"*Requester*\n<@{view.requester}>",
        f"*Resource*\n`{view.resource}`",
        f"*{'Extension' if view.is_extension else 'Duration'}*\n{duration}",
        f"*Request*\n#{view.id}",
    ]
    return {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": field} for field in fields],
    }


def _reason(view: RequestView) -> Block:
    return section(f"*Reason*\n>{escape(view.reason)}")


def status_line(view: RequestView) -> str:
    """One line saying where the request stands and who moved it there."""
    status = view.status
    if status is RequestStatus.PENDING:
        asked = ", ".join(f"<@{u}>" for u in view.approvers)
        line = f":hourglass_flowing_sand: Waiting for approval from {asked}"
        if view.approvals_required > 1:
            got = ", ".join(f"<@{u}>" for u in view.approved_by)
            line += f" — {len(view.approved_by)} of {view.approvals_required} approvals" + (
                f" ({got})" if got else ""
            )
        return line
    if status is RequestStatus.EXPIRED:
        return ":hourglass: Expired unanswered; nothing was issued"
    decided = ""
    if view.decided_by and view.decided_at:
        decided = f" by <@{view.decided_by}> at {when(view.decided_at)}"
        if len(view.approved_by) > 1:
            others = ", ".join(f"<@{u}>" for u in view.approved_by if u != view.decided_by)
            decided += f" (with {others})"
    if view.break_glass:
        review = (
            f"reviewed by <@{view.reviewed_by}> at {when(view.reviewed_at)}"
            if view.reviewed_by and view.reviewed_at
            else "*not yet reviewed*"
        )
        return f":rotating_light: Break-glass access taken at {when(view.created_at)}; {review}"
    if view.is_extension and status is RequestStatus.ENDED:
        return f":white_check_mark: Approved{decided}; the grant was extended"
    if status is RequestStatus.DENIED:
        return f":no_entry: Denied{decided}"
    if status is RequestStatus.WITHDRAWN:
        return ":leftwards_arrow_with_hook: Withdrawn by the requester"
    if status is RequestStatus.FAILED:
        return f":x: Approved{decided}, but issuing failed: {escape(view.failure or 'unknown')}"
    if status is RequestStatus.APPROVED:
        return f":white_check_mark: Approved{decided}; issuing credentials…"
    if status is RequestStatus.ACTIVE and view.expires_at:
        return f":white_check_mark: Approved{decided}; access until {when(view.expires_at)}"
    if status is RequestStatus.REVOKING:
        return f":white_check_mark: Approved{decided}; access being revoked"
    ended = f" at {when(view.ended_at)}" if view.ended_at else ""
    how = "expired" if view.end_reason == "expired" else "revoked"
    return f":white_check_mark: Approved{decided}; access {how}{ended}"


def approval_message(view: RequestView) -> tuple[str, list[Block]]:
    """The request as approvers see it: with Approve/Deny while pending, without afterwards;
    break-glass access with a Reviewed button until an approver has looked at it."""
    if view.break_glass:
        text = (
            f"{view.label}: <@{view.requester}> took `{view.resource}` for "
            f"{format_duration(view.duration)} WITHOUT APPROVAL"
        )
        title = (
            f":rotating_light: *BREAK-GLASS: {view.label}* — taken without approval, needs review"
        )
    elif view.is_extension:
        text = (
            f"{view.label}: <@{view.requester}> asks for {format_duration(view.duration)} "
            f"more on `{view.resource}` (request #{view.parent_id})"
        )
        title = f":stopwatch: *{view.label}*"
    else:
        text = (
            f"{view.label}: <@{view.requester}> asks for `{view.resource}` "
            f"for {format_duration(view.duration)}"
        )
        title = f":key: *{view.label}*"
    blocks: list[Block] = [
        section(title + (f" — {escape(view.description)}" if view.description else "")),
        _summary(view),
        _reason(view),
    ]
    if view.routing_note:
        blocks.append(context(f":information_source: {view.routing_note}"))
    if view.key_fingerprint:
        blocks.append(context(f":key: Signs the SSH public key `{view.key_fingerprint}`"))
    if view.ends_by_expiry_only:
        blocks.append(context(EXPIRY_ONLY_NOTE))
    if view.break_glass and not view.reviewed_by:
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.DECISION.value,
                "elements": [button("Reviewed", ActionId.REVIEW, str(view.id), "primary")],
            }
        )
    if view.status is RequestStatus.PENDING:
        value = str(view.id)
        blocks.append(
            {
                "type": "actions",
                "block_id": BlockId.DECISION.value,
                "elements": [
                    button("Approve", ActionId.APPROVE, value, "primary"),
                    button("Deny", ActionId.DENY, value, "danger"),
                ],
            }
        )
    blocks.append(context(status_line(view)))
    return text, blocks


def credentials_message(view: RequestView, delivery: CredentialDelivery) -> tuple[str, list[Block]]:
    """The DM that hands the requester their access. Only the requester ever receives this."""
    until = when(delivery.expires_at)
    text = f"Your access to {view.resource} (request #{view.id}) is ready"
    blocks: list[Block] = [
        section(
            f":unlock: *Access to `{view.resource}` granted* (request #{view.id}), "
            f"approved by <@{view.decided_by}>. It ends at {until}."
        ),
    ]
    if delivery.wrapping_token is not None:
        ttl = format_duration(delivery.wrap_ttl) if delivery.wrap_ttl else "a few minutes"
        token = delivery.wrapping_token.reveal()
        blocks.append(
            section(
                "Your credentials are sealed in a single-use wrapping token. Unwrap it within "
                f"{ttl}; nobody else can, and once you have it is spent:\n"
                f"```vault unwrap {token}```\n(or `bao unwrap {token}` with OpenBao)"
            )
        )
    elif delivery.values:
        if delivery.verbatim:  # a certificate: copyable into its file as it is
            shown = "\n".join(
                f"*{key}*\n```{escape(value.reveal())}```" for key, value in delivery.values.items()
            )
        else:
            lines = "\n".join(
                f"{key}: {escape(value.reveal())}" for key, value in delivery.values.items()
            )
            shown = f"```{lines}```"
        blocks.append(
            section(
                f"{shown}\nThis message is only visible to you. Do not paste these values anywhere."
            )
        )
    for instruction in delivery.instructions:
        blocks.append(section(instruction))
    for note in delivery.notes:
        blocks.append(context(f":warning: {escape(note)}"))
    if view.ends_by_expiry_only:
        blocks.append(context(EXPIRY_ONLY_NOTE))
    blocks.append(grant_actions(view))
    return text, blocks


def grant_actions(view: RequestView, may_extend: bool = True) -> Block:
    """Revoke now, and Extend (the approvers are asked again; never for break-glass, nor for a
    grant that ends by expiry only, nor when ``may_extend`` is False: a locked requester's).
    Revoking such a grant asks first, saying what it cannot do."""
    revoke = button("Revoke now", ActionId.REVOKE, str(view.id), "danger")
    if view.ends_by_expiry_only:
        revoke["confirm"] = {
            "title": {"type": "plain_text", "text": "End this grant?"},
            "text": {
                "type": "mrkdwn",
                "text": "This ends the grant in debug-access and the audit trail. The SSH "
                "certificate itself cannot be recalled: it stays valid until "
                + (when(view.expires_at) if view.expires_at else "it expires")
                + ".",
            },
            "confirm": {"type": "plain_text", "text": "End it"},
            "deny": {"type": "plain_text", "text": "Keep it"},
        }
    elements = [revoke]
    if may_extend and not view.break_glass and not view.ends_by_expiry_only:
        elements.append(button("Extend", ActionId.EXTEND, str(view.id)))
    return {"type": "actions", "block_id": BlockId.GRANT_ACTIONS.value, "elements": elements}


def revoked_text(view: RequestView) -> str:
    """The reply to Revoke now: where the request stands, and, for a grant that ends by expiry
    only, that the certificate was not recalled."""
    text = f"Request #{view.id} is now {view.status.label}."
    if view.ends_by_expiry_only and view.status in {RequestStatus.ENDED, RequestStatus.REVOKING}:
        until = when(view.expires_at) if view.expires_at else "its expiry"
        text += (
            " It is ended in debug-access and the audit trail, but the SSH certificate cannot "
            f"be recalled: it stays valid until {until}."
        )
    return text


def extend_modal(view: RequestView, max_total: str) -> dict[str, Any]:
    """Ask how much longer; the approvers decide."""
    return {
        "type": "modal",
        "callback_id": CallbackId.EXTEND_MODAL.value,
        "private_metadata": json.dumps({"request_id": view.id}),
        "title": {"type": "plain_text", "text": "Extend access"},
        "submit": {"type": "plain_text", "text": "Ask approvers"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(
                f"Extend `{view.resource}` (request #{view.id}). The approvers are asked "
                f"again; access to it lasts at most {max_total} in total."
            ),
            {
                "type": "input",
                "block_id": BlockId.EXTEND_DURATION.value,
                "label": {"type": "plain_text", "text": "How much longer"},
                "hint": {"type": "plain_text", "text": "Like 15m, 30m or 1h"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": InputId.EXTEND_DURATION.value,
                    "placeholder": {"type": "plain_text", "text": "30m"},
                },
            },
        ],
    }


def credentials_closed_message(view: RequestView) -> tuple[str, list[Block]]:
    """What the credentials DM becomes once the grant has ended: no secret, no buttons."""
    text = f"Your access to {view.resource} (request #{view.id}) has ended"
    return text, [
        section(f":lock: *Access to `{view.resource}` ended* (request #{view.id})."),
        context(status_line(view)),
    ]


def confirmation_text(view: RequestView, asked: Sequence[str]) -> str:
    """The requester's ephemeral receipt for a new request."""
    who = ", ".join(f"<@{user}>" for user in asked)
    if view.break_glass:
        return (
            f":rotating_light: Request #{view.id}: break-glass access to `{view.resource}` "
            f"({format_duration(view.duration)}) is {view.status.label}. It has been "
            f"announced to the audit and approvals channels and to {who or 'nobody on call'}"
            "; an approver will review it."
        )
    what = (
        f"Extension of #{view.parent_id} by {format_duration(view.duration)}"
        if view.is_extension
        else f"`{view.resource}` ({format_duration(view.duration)})"
    )
    return (
        f":inbox_tray: Request #{view.id} for {what} sent to {who}. You will get a DM when "
        f"it is decided. Withdraw it with `{COMMAND} revoke {view.id}`."
    )


def list_message(views: Sequence[RequestView]) -> str:
    """``/debug-access list``: pending requests and active grants."""
    if not views:
        return f"You have no pending requests or active grants. `{COMMAND} help` shows how to ask."
    lines = ["*Your open requests and grants*"]
    for view in views[:40]:
        until = (
            f", until {when(view.expires_at)}"
            if view.expires_at and view.status in {RequestStatus.ACTIVE, RequestStatus.REVOKING}
            else ""
        )
        lines.append(
            f"• #{view.id} `{view.resource}` {format_duration(view.duration)} — "
            f"{view.status.label}{until}"
        )
    return "\n".join(lines)


def help_text(policy: Policy) -> str:
    """``/debug-access help``."""
    resources = "\n".join(
        f"• `{name}` — {escape(res.description) or 'no description'} "
        f"(up to {format_duration(res.max_duration)})"
        for name, res in sorted(policy.resources.items())
    )
    return (
        "*debug-access* gives you temporary, approved access to production.\n"
        f"• `{COMMAND} <resource> <duration> <reason>` — ask, e.g. "
        f"`{COMMAND} payments-db 30m INC-4211 checkout errors`\n"
        f"• `{COMMAND}` — the same as a form\n"
        f"• `{COMMAND} list` — your pending requests and active grants\n"
        f"• `{COMMAND} revoke <id>` — end a grant early (or withdraw a pending request)\n"
        f"• `{COMMAND} extend <id> <duration>` — ask the approvers for more time\n"
        f"• `{COMMAND} <resource> <duration> --break-glass <reason>` — emergency access without "
        "approval, where the policy allows it; announced loudly and reviewed afterwards\n"
        f"• `{COMMAND} lock @user <reason>` / `unlock @user` — admins only: take all access "
        "from an account that may be compromised, at once\n"
        f"• `{COMMAND} help` — this message\n"
        "Durations look like `15m`, `2h` or `1h30m`. An approver other than you decides; your "
        "credentials arrive by DM and are revoked automatically when the time is up.\n"
        f"*Resources*\n{resources}"
    )


def request_modal(
    policy: Policy,
    origin_channel: str | None,
    selected: str | None = None,
    registered_key: str | None = None,
) -> dict[str, Any]:
    """The request form: resource select (from the policy), duration, reason, and, only when the
    chosen resource's grant signs an SSH key, the public key (optional if one is registered).

    Choosing a resource dispatches an action, and the listener redraws the form with this
    builder: Slack keeps what was typed in fields whose block and action ids stay the same.
    """
    options = [
        {
            "text": {"type": "plain_text", "text": name[:75]},
            "description": {
                "type": "plain_text",
                "text": (res.description or f"up to {format_duration(res.max_duration)}")[:75],
            },
            "value": name,
        }
        for name, res in sorted(policy.resources.items())
    ][:100]
    select: Block = {
        "type": "static_select",
        "action_id": InputId.RESOURCE.value,
        "placeholder": {"type": "plain_text", "text": "Choose a resource"},
        "options": options,
    }
    chosen = policy.resource(selected) if selected else None
    initial = next((o for o in options if o["value"] == selected), None)
    if initial is not None:
        select["initial_option"] = initial
    form: list[Block] = [
        {
            "type": "input",
            "block_id": BlockId.RESOURCE.value,
            "dispatch_action": True,
            "label": {"type": "plain_text", "text": "Resource"},
            "element": select,
        },
    ]
    if chosen is not None and chosen.grant.key_policy() is not None:
        form.append(public_key_input(registered_key))
        if not chosen.grant.recallable:
            form.append(context(EXPIRY_ONLY_NOTE))
    form += [
        {
            "type": "input",
            "block_id": BlockId.DURATION.value,
            "label": {"type": "plain_text", "text": "Duration"},
            "hint": {"type": "plain_text", "text": "Like 15m, 2h or 1h30m"},
            "element": {
                "type": "plain_text_input",
                "action_id": InputId.DURATION.value,
                "placeholder": {"type": "plain_text", "text": "30m"},
            },
        },
        {
            "type": "input",
            "block_id": BlockId.REASON.value,
            "label": {"type": "plain_text", "text": "Reason"},
            "hint": {"type": "plain_text", "text": "An incident or ticket id helps approvers"},
            "element": {
                "type": "plain_text_input",
                "action_id": InputId.REASON.value,
                "multiline": True,
                "max_length": MAX_REASON_LENGTH,
            },
        },
    ]
    return {
        "type": "modal",
        "callback_id": CallbackId.REQUEST_MODAL.value,
        "private_metadata": json.dumps({"channel": origin_channel}),
        "title": {"type": "plain_text", "text": "Request access"},
        "submit": {"type": "plain_text", "text": "Request"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": form,
    }


class DamagedForm(UserError):
    """A form's private_metadata is not what we wrote into it (an old form, or a forged one)."""

    def __init__(self) -> None:
        super().__init__("This form is out of date or damaged. Close it and open it again.")


def _metadata(view: dict[str, Any]) -> dict[str, Any]:
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        raise DamagedForm() from None
    if not isinstance(metadata, dict):
        raise DamagedForm()
    return metadata


def metadata_channel(view: dict[str, Any]) -> str | None:
    """The channel a request form was opened from, as ``request_modal`` stored it (None when
    it was opened where there is none). Raises ``DamagedForm`` for anything that is not a
    Slack channel id: it would be stored with the request and posted to."""
    channel = _metadata(view).get("channel")
    if channel is None:
        return None
    if not is_channel_id(channel):
        raise DamagedForm()
    return channel


def metadata_request_id(view: dict[str, Any]) -> int:
    """The request an extension form is about, as ``extend_modal`` stored it. Raises
    ``DamagedForm`` unless it is an id a row can have (``is_row_id``)."""
    request_id = _metadata(view).get("request_id")
    if not is_row_id(request_id):
        raise DamagedForm()
    return request_id


def _public_key_field(block: BlockId, action: InputId, label: str, hint: str) -> Block:
    return {
        "type": "input",
        "block_id": block.value,
        "label": {"type": "plain_text", "text": label},
        "hint": {"type": "plain_text", "text": hint},
        "element": {
            "type": "plain_text_input",
            "action_id": action.value,
            "multiline": True,
            "max_length": PUBLIC_KEY_INPUT_LIMIT,
            "placeholder": {"type": "plain_text", "text": "ssh-ed25519 AAAA... you@laptop"},
        },
    }


def public_key_input(registered_key: str | None) -> Block:
    """The request form's SSH public key field: required unless a key is registered."""
    hint = "The contents of your .pub file, one line. Never the private key."
    if registered_key:
        hint = f"Leave empty to use your registered key {registered_key}. " + hint
    field = _public_key_field(BlockId.PUBLIC_KEY, InputId.PUBLIC_KEY, "SSH public key", hint)
    field["optional"] = registered_key is not None
    return field


def ssh_key_modal(registered_key: str | None) -> dict[str, Any]:
    """Register (or replace) the SSH public key used by requests that need one."""
    now = f"Your registered key is `{registered_key}`." if registered_key else "No key yet."
    return {
        "type": "modal",
        "callback_id": CallbackId.SSH_KEY_MODAL.value,
        "title": {"type": "plain_text", "text": "Your SSH public key"},
        "submit": {"type": "plain_text", "text": "Register"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(
                "Resources that give SSH certificates sign this key, unless you paste another in "
                f"the request form. {now} Only the public key is kept; paste the `.pub` file."
            ),
            _public_key_field(
                BlockId.SSH_KEY,
                InputId.SSH_KEY,
                "Public key",
                "For example the contents of ~/.ssh/id_ed25519.pub. Never the private key.",
            ),
        ],
    }


def audit_text(
    view: RequestView | None, event: str, alert: bool = False, threaded: bool = False
) -> str:
    """One audit-channel line: what happened to which request, for whom. A reply in the
    request's thread needs no repeat of who and what, unless it is echoed to the channel.
    ``event`` is mrkdwn the lifecycle wrote (mentions of who acted), any user text in it
    already escaped; without a ``view`` it concerns a person, not a request (a lock)."""
    prefix = ":rotating_light: " if alert else ""
    if view is None:
        return f"{prefix}{event}"
    if threaded and not alert:
        return f"{prefix}#{view.id}: {event}"
    return (
        f"{prefix}#{view.id} `{view.resource}` for <@{view.requester}> "
        f"({format_duration(view.duration)}): {event}"
    )
