"""Block Kit builders: content, escaping, Slack's limits, and validity per slack_sdk's models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block as SdkBlock
from slack_sdk.models.views import View

from bot.domain.requests import MAX_REASON_LENGTH, RequestStatus, ValidRequest
from bot.issuer import SecretValue
from bot.mrkdwn import escape
from bot.policy import parse_policy
from bot.ports import CredentialDelivery, RequestView
from bot.slack import blocks
from bot.slack.ids import COMMAND, ActionId, BlockId, CallbackId, InputId
from tests.unit.fakes import (
    APPROVER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    START,
    make_lifecycle,
)

S = RequestStatus
POLICY = parse_policy(EXAMPLE_POLICY)
HOSTILE = "<!channel> <@U0ADMIN> <https://evil.example|click> & stuff"
RAW_MARKUP = ("<!channel>", "<@U0ADMIN>", "<https://evil", "& stuff")

PENDING = RequestView(
    id=42,
    requester=REQUESTER,
    resource="payments-db",
    description="Read-only SQL on the payments replica",
    duration=timedelta(minutes=30),
    reason="INC-4211 checkout errors",
    status=S.PENDING,
    created_at=START,
    approvers=(APPROVER, OTHER_APPROVER),
)
DECIDED = replace(PENDING, decided_by=APPROVER, decided_at=START + timedelta(minutes=1))


def _state(status: RequestStatus) -> RequestView:
    view = replace(DECIDED, status=status)
    if status in {S.ACTIVE, S.REVOKING, S.ENDED}:
        view = replace(view, expires_at=START + timedelta(minutes=31))
    if status is S.ENDED:
        view = replace(
            view, ended_at=START + timedelta(minutes=10), end_reason="revoked", ended_by=REQUESTER
        )
    if status is S.FAILED:
        view = replace(view, failure="fake Vault refused create")
    if status is S.WITHDRAWN:
        view = replace(PENDING, status=status)
    return view


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _texts(message_blocks: list[dict[str, Any]]) -> list[str]:
    """Every text string in the blocks (section texts, fields, context elements, buttons)."""
    return [node["text"] for node in _walk(message_blocks) if isinstance(node.get("text"), str)]


def _actions(message_blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in message_blocks if b["type"] == "actions"]


def assert_valid_block_kit(message_blocks: list[dict[str, Any]]) -> None:
    """slack_sdk's models check Slack's lengths in to_dict(); a lossless round trip also proves
    that every key we send is one Slack knows."""
    assert 0 < len(message_blocks) <= 50
    for block in message_blocks:
        parsed = SdkBlock.parse(block)
        assert parsed is not None, block
        assert parsed.to_dict() == block
    for node in _walk(message_blocks):
        if node.get("type") in {"mrkdwn", "plain_text"}:  # slack_sdk skips these lengths
            assert len(node["text"]) <= 3000
        if node.get("type") == "section" and "text" in node:
            assert len(node["text"]["text"]) <= blocks.SECTION_TEXT_LIMIT
        if node.get("type") == "section" and "fields" in node:
            assert len(node["fields"]) <= 10
            assert all(len(f["text"]) <= 2000 for f in node["fields"])


# -- approval message ------------------------------------------------------------------------------


def test_pending_request_has_approve_and_deny_buttons() -> None:
    text, message = blocks.approval_message(PENDING)
    assert_valid_block_kit(message)
    (actions,) = _actions(message)
    assert actions["block_id"] == BlockId.DECISION
    assert [(b["action_id"], b["value"], b.get("style")) for b in actions["elements"]] == [
        (ActionId.APPROVE.value, "42", "primary"),
        (ActionId.DENY.value, "42", "danger"),
    ]
    assert [b["text"]["text"] for b in actions["elements"]] == ["Approve", "Deny"]
    # requester, resource, duration and reason are all shown
    shown = "\n".join(_texts(message))
    for fact in (
        f"<@{REQUESTER}>",
        "`payments-db`",
        "30m",
        "#42",
        "INC-4211 checkout errors",
        "Read-only SQL on the payments replica",
    ):
        assert fact in shown
    assert f"<@{APPROVER}>" in shown and f"<@{OTHER_APPROVER}>" in shown  # who was asked
    assert "#42" in text and "payments-db" in text and REQUESTER in text  # fallback text


@pytest.mark.parametrize("status", [s for s in RequestStatus if s is not S.PENDING])
def test_decided_request_has_no_buttons(status: RequestStatus) -> None:
    _, message = blocks.approval_message(_state(status))
    assert_valid_block_kit(message)
    assert _actions(message) == []
    assert not any(n.get("type") == "button" for n in _walk(message))


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (S.APPROVED, "Approved by"),
        (S.ACTIVE, "Approved by"),
        (S.REVOKING, "revoked"),
        (S.ENDED, "access revoked"),
        (S.DENIED, "Denied by"),
        (S.FAILED, "issuing failed"),
    ],
)
def test_decided_request_says_who_decided_and_when(status: RequestStatus, says: str) -> None:
    view = _state(status)
    _, message = blocks.approval_message(view)
    status_text = message[-1]["elements"][0]["text"]
    assert says in status_text
    assert f"<@{APPROVER}>" in status_text
    assert view.decided_at is not None
    assert f"<!date^{int(view.decided_at.timestamp())}^" in status_text


def test_status_line_distinguishes_expiry_from_revocation() -> None:
    expired = replace(_state(S.ENDED), end_reason="expired")
    assert "access expired" in blocks.status_line(expired)
    assert "access revoked" in blocks.status_line(_state(S.ENDED))
    assert "Withdrawn" in blocks.status_line(_state(S.WITHDRAWN))
    active = blocks.status_line(_state(S.ACTIVE))
    assert "access until" in active and "|2025-03-04 09:31 UTC>" in active


def test_hostile_reason_is_escaped() -> None:
    view = replace(PENDING, reason=HOSTILE)
    _, message = blocks.approval_message(view)
    dumped = json.dumps(message)
    for raw in RAW_MARKUP:
        assert raw not in dumped
    reason = next(t for t in _texts(message) if t.startswith("*Reason*"))
    assert reason == (
        "*Reason*\n>&lt;!channel&gt; &lt;@U0ADMIN&gt; "
        "&lt;https://evil.example|click&gt; &amp; stuff"
    )
    assert_valid_block_kit(message)


def test_hostile_failure_and_description_are_escaped() -> None:
    view = replace(_state(S.FAILED), failure=HOSTILE, description=HOSTILE)
    _, message = blocks.approval_message(view)
    dumped = json.dumps(message)
    for raw in RAW_MARKUP:
        assert raw not in dumped
    assert "&lt;!channel&gt;" in message[0]["text"]["text"]
    assert "&lt;!channel&gt;" in message[-1]["elements"][0]["text"]


@pytest.mark.parametrize("char", ["a", "&", "<", "é", "\U0001f600"])
def test_longest_reason_fits_in_a_section(char: str) -> None:
    view = replace(PENDING, reason=char * MAX_REASON_LENGTH)
    _, message = blocks.approval_message(view)
    assert_valid_block_kit(message)
    assert all(len(t) <= blocks.SECTION_TEXT_LIMIT for t in _texts(message))
    reason = next(t for t in _texts(message) if t.startswith("*Reason*"))
    assert reason.endswith(blocks.escape(char * MAX_REASON_LENGTH))  # nothing cut


def test_overlong_text_is_truncated_to_the_section_limit() -> None:
    view = replace(PENDING, reason="&" * 5000)
    _, message = blocks.approval_message(view)
    assert_valid_block_kit(message)
    reason = next(t for t in _texts(message) if t.startswith("*Reason*"))
    assert len(reason) == blocks.SECTION_TEXT_LIMIT
    assert reason.endswith("…")


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a & b", "a &amp; b"),
        ("<b>", "&lt;b&gt;"),
        ("&lt;", "&amp;lt;"),
        ("plain", "plain"),
        ("*bold* `code`", "*bold* `code`"),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert blocks.escape(text) == escaped


# -- credentials -----------------------------------------------------------------------------------


def _issue(
    delivery_mode: str, resource: str = "payments-db"
) -> tuple[Any, RequestView, CredentialDelivery]:
    policy = EXAMPLE_POLICY.replace("delivery: wrapped", f"delivery: {delivery_mode}")
    h = make_lifecycle(policy)
    submitted = h.lifecycle.submit(
        REQUESTER, ValidRequest(resource, timedelta(minutes=30), HOSTILE), "C0ORIGIN"
    )
    h.lifecycle.decide(submitted.view.id, APPROVER, approve=True)
    ((view, delivery),) = h.notifier.deliveries
    return h, view, delivery


def test_wrapped_credentials_show_the_wrapping_token_and_not_the_values() -> None:
    h, view, delivery = _issue("wrapped")
    text, message = blocks.credentials_message(view, delivery)
    assert_valid_block_kit(message)
    dumped = json.dumps(message) + text
    assert delivery.wrapping_token is not None
    wrapping = delivery.wrapping_token.reveal()
    assert f"vault unwrap {wrapping}" in dumped
    assert f"bao unwrap {wrapping}" in dumped
    assert "10m" in dumped  # the wrap TTL
    underlying = [s for s in h.issuer.secrets if s != wrapping]
    assert len(underlying) == 3  # token, username, password
    for secret in underlying:
        assert secret not in dumped
    assert set(h.issuer.wrapped[wrapping]) >= {"username", "password"}  # but they were wrapped


@pytest.mark.parametrize("resource", ["payments-db", "orders-logs"])
def test_dm_credentials_show_the_values(resource: str) -> None:
    h, view, delivery = _issue("dm", resource)
    assert delivery.wrapping_token is None and delivery.values
    _, message = blocks.credentials_message(view, delivery)
    assert_valid_block_kit(message)
    dumped = json.dumps(message)
    for key, value in delivery.values.items():
        assert f"{key}: {value.reveal()}" in dumped
    assert "unwrap" not in dumped
    if resource == "orders-logs":
        assert list(delivery.values) == ["token"]
    else:
        assert h.issuer.secrets[0] not in dumped  # the grant token itself is not handed out


@pytest.mark.parametrize("mode", ["wrapped", "dm"])
def test_credentials_message_has_revoke_now_and_says_when_it_ends(mode: str) -> None:
    _, view, delivery = _issue(mode)
    text, message = blocks.credentials_message(view, delivery)
    (actions,) = _actions(message)
    assert actions["block_id"] == BlockId.GRANT_ACTIONS
    assert [(b["action_id"], b["value"]) for b in actions["elements"]] == [
        (ActionId.REVOKE.value, str(view.id)),
        (ActionId.EXTEND.value, str(view.id)),
    ]
    assert f"<!date^{int(delivery.expires_at.timestamp())}^" in json.dumps(message)
    assert f"<@{APPROVER}>" in json.dumps(message)
    assert "payments-db" in text
    for raw in RAW_MARKUP:  # the hostile reason is not repeated unescaped
        assert raw not in json.dumps(message)


def test_credentials_notes_are_escaped() -> None:
    delivery = CredentialDelivery(
        expires_at=START,
        wrapping_token=SecretValue("hvs.wrapped-xyz"),
        wrap_ttl=timedelta(minutes=5),
        notes=("capped <!here>",),
    )
    _, message = blocks.credentials_message(DECIDED, delivery)
    assert "<!here>" not in json.dumps(message)
    assert any("capped &lt;!here&gt;" in t for t in _texts(message))
    assert_valid_block_kit(message)


def test_closed_credentials_have_no_button_and_no_secret() -> None:
    h, view, _ = _issue("dm")
    h.lifecycle.revoke_early(view.id, REQUESTER)
    ended = h.lifecycle.get(view.id)
    assert ended.status is S.ENDED
    text, message = blocks.credentials_closed_message(ended)
    assert_valid_block_kit(message)
    dumped = json.dumps(message) + text
    assert _actions(message) == []
    assert "button" not in dumped
    for secret in h.issuer.secrets:
        assert secret not in dumped
    assert "ended" in text and "access revoked" in dumped and f"<@{APPROVER}>" in dumped


# -- modal, help, receipts -------------------------------------------------------------------------


def test_request_modal() -> None:
    modal = blocks.request_modal(POLICY, "C0ORIGIN")
    assert View(**modal).to_dict() == modal  # valid and lossless per slack_sdk
    assert modal["callback_id"] == CallbackId.REQUEST_MODAL
    assert json.loads(modal["private_metadata"]) == {"channel": "C0ORIGIN"}
    inputs = [b for b in modal["blocks"] if b["type"] == "input"]
    assert [(b["block_id"], b["element"]["action_id"]) for b in inputs] == [
        (BlockId.RESOURCE, InputId.RESOURCE),
        (BlockId.DURATION, InputId.DURATION),
        (BlockId.REASON, InputId.REASON),
    ]
    select = inputs[0]["element"]
    assert select["type"] == "static_select"
    assert [o["value"] for o in select["options"]] == sorted(POLICY.resources)
    descriptions = {o["value"]: o["description"]["text"] for o in select["options"]}
    assert descriptions["payments-db"] == "Read-only SQL on the payments replica"
    assert inputs[2]["element"]["max_length"] == MAX_REASON_LENGTH


def test_request_modal_without_channel_and_with_long_descriptions() -> None:
    raw = EXAMPLE_POLICY.replace("Read-only SQL on the payments replica", "d" * 300)
    modal = blocks.request_modal(parse_policy(raw), None)
    assert json.loads(modal["private_metadata"]) == {"channel": None}
    assert View(**modal).to_dict() == modal


def test_help_lists_every_resource_and_the_subcommands() -> None:
    text = blocks.help_text(POLICY)
    for name, resource in POLICY.resources.items():
        assert f"`{name}`" in text
        assert resource.description in text
    assert "(up to 4h)" in text and "(up to 2h)" in text
    for sub in ("list", "revoke <id>", "help"):
        assert f"`{COMMAND} {sub}`" in text


def test_help_escapes_descriptions() -> None:
    policy = parse_policy(
        EXAMPLE_POLICY.replace("Read-only SQL on the payments replica", '"<!channel> & co"')
    )
    text = blocks.help_text(policy)
    assert "<!channel>" not in text and "&lt;!channel&gt; &amp; co" in text


def test_confirmation_names_the_request_and_who_was_asked() -> None:
    text = blocks.confirmation_text(PENDING, [APPROVER, OTHER_APPROVER])
    assert "#42" in text and "`payments-db`" in text and "30m" in text
    assert f"<@{APPROVER}>, <@{OTHER_APPROVER}>" in text
    assert f"`{COMMAND} revoke 42`" in text


def test_list_message() -> None:
    assert "no pending requests" in blocks.list_message([])
    active = _state(S.ACTIVE)
    text = blocks.list_message([PENDING, replace(active, id=43)])
    lines = text.splitlines()
    assert lines[1].startswith("• #42 `payments-db` 30m — waiting for approval")
    assert lines[2].startswith("• #43 `payments-db` 30m — active, until <!date^")


def test_list_message_is_bounded() -> None:
    text = blocks.list_message([replace(PENDING, id=i) for i in range(100)])
    assert len(text.splitlines()) == 41


@pytest.mark.parametrize("alert", [False, True])
def test_audit_text(alert: bool) -> None:
    text = blocks.audit_text(PENDING, "approved by <@U0ALICE>", alert)
    assert text.startswith(":rotating_light: ") == alert
    assert "#42 `payments-db` for <@U0CAROL> (30m): approved by <@U0ALICE>" in text
    about_a_person = blocks.audit_text(None, f"<@U0SEC> locked <@U0EVE>: {escape(HOSTILE)}", alert)
    assert about_a_person.startswith(":rotating_light: ") == alert
    assert "<@U0SEC> locked <@U0EVE>: " in about_a_person
    assert "<!channel>" not in about_a_person
