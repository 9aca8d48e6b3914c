"""Bad, hostile and forged input gets a clear answer and changes nothing; the other surfaces
(modal, list, help) work through Slack as a user drives them."""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from bot.mrkdwn import escape
from bot.slack.ids import ActionId, BlockId, CallbackId, InputId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    APPROVALS,
    MALLORY,
    REQUESTER,
    ack_text,
    approval_message,
    blocks_text,
    bot_rows,
    click,
    credentials_message,
    policy_for,
    posts_to,
    reply_to,
    request_access,
    wait_until,
)
from tests.integration.services import PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration


def stored_requests(postgres: PostgresServer, bot) -> int:
    return int(bot_rows(postgres, bot, "SELECT count(*) FROM access_request")[0][0])


@pytest.fixture
def bot(run_bot, vault_db: VaultDatabase):
    return run_bot(policy_for(vault_db.path))


BAD_COMMANDS = [
    (
        "no-such-db 30m INC-1 why",
        ["Unknown resource `no-such-db`", "`orders-logs`", "`payments-db`"],
    ),
    ("payments-db 3x INC-1 why", ["`3x` is not a duration"]),
    ("payments-db 0m INC-1 why", ["too short"]),
    ("payments-db -5m INC-1 why", ["is not a duration"]),
    ("payments-db 5h INC-1 why", ["longer than this resource allows", "4h"]),
    ("payments-db 999999999h INC-1 why", ["is not a duration"]),
    ("payments-db 30m", ["give a reason"]),
    ("payments-db", ["Missing reason"]),
    ("orders-logs INC-1 no duration and no default", ["Say how long"]),
    ("list everything", ["takes no arguments"]),
    ("revoke abc", ["is not a request id"]),
    ("revoke", ["Usage"]),
    ("<!channel> 30m INC-1 ping", ["Unknown resource `!channel`"]),
]


@pytest.mark.parametrize(("text", "expected"), BAD_COMMANDS)
def test_bad_commands_explain_and_change_nothing(
    bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    text: str,
    expected: list[str],
) -> None:
    sent = bot.sender.slash(REQUESTER, text)
    assert sent.status_code == 200
    answer = ack_text(sent)
    for fragment in expected:
        assert fragment in answer, answer
    assert "<!channel>" not in answer
    time.sleep(0.3)
    assert stored_requests(postgres, bot) == 0
    assert posts_to(slack, APPROVALS) == []


def test_revoke_of_someone_elses_or_unknown_request_is_refused(
    bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
) -> None:
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-2 mine")
    sent = bot.sender.slash("U0MALLORY", f"revoke {request_id}")
    assert "Only the requester or an approver" in reply_to(slack, str(sent.response_key))["text"]
    sent = bot.sender.slash(REQUESTER, "revoke 4242")
    assert "no request #4242" in reply_to(slack, str(sent.response_key))["text"]
    assert (
        bot_rows(postgres, bot, f"SELECT status FROM access_request WHERE id={request_id}")[0][0]
        == "pending"
    )
    # The requester may withdraw their own pending request.
    sent = bot.sender.slash(REQUESTER, f"revoke {request_id}")
    assert "withdrawn" in reply_to(slack, str(sent.response_key))["text"]
    message = approval_message(slack, request_id)
    assert "Withdrawn" in blocks_text(message)
    with pytest.raises(AssertionError):
        bot.sender.click(ALICE, message, ActionId.APPROVE)  # the buttons are gone


def test_hostile_reason_is_escaped_everywhere(
    bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
) -> None:
    reason = "INC-3 <!channel> <@U0CEO> <https://evil.example|click me> & <#C0SECRET>"
    request_id = request_access(bot, slack, REQUESTER, f"payments-db 30m {reason}")
    message = approval_message(slack, request_id)
    text = blocks_text(message)
    # Slack escapes what was typed (a mention, a link) into entities; the reason keeps it as it
    # was typed, as plain text that pings and links nobody, and `&` is escaped when shown.
    typed = "INC-3 @channel @U0CEO https://evil.example & #C0SECRET"
    assert escape(typed) in text and "&amp;" in text
    for call in slack.calls():
        dumped = json.dumps(call.params)
        for raw in ("<!channel>", "<@U0CEO>", "<https://evil.example", "<#C0SECRET>"):
            assert raw not in dumped, f"unescaped {raw} in {call.method}"
    # Stored as typed (escaping is a rendering concern), so the audit trail is faithful.
    stored = bot_rows(postgres, bot, f"SELECT reason FROM access_request WHERE id={request_id}")
    assert stored[0][0] == typed


def signed_form(bot, user: str, text: str, timestamp: int) -> tuple[bytes, dict[str, str]]:
    body = urllib.parse.urlencode(
        {
            "team_id": "T0TEAM",
            "user_id": user,
            "command": "/debug-access",
            "text": text,
            "channel_id": "C0GENERAL",
            "response_url": "http://127.0.0.1:9/nowhere",
            "trigger_id": "1.2.3",
        }
    ).encode()
    return body, bot.sender.sign(body, timestamp=timestamp)


def test_forged_stale_and_replayed_requests_get_401_and_change_nothing(
    bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
) -> None:
    now = int(time.time())
    body, headers = signed_form(bot, REQUESTER, "payments-db 30m INC-4 forged", now)
    forged = bot.sender.post_raw(body, timestamp=now, signature="v0=" + "0" * 64)
    assert forged.status_code == 401
    stale_ts = now - 6 * 60
    body, headers = signed_form(bot, REQUESTER, "payments-db 30m INC-4 stale", stale_ts)
    stale = bot.sender.post_raw(body, timestamp=stale_ts, signature=headers["X-Slack-Signature"])
    assert stale.status_code == 401
    # A body altered after signing (a replay with a different text) is rejected too.
    body, headers = signed_form(bot, REQUESTER, "payments-db 30m INC-4 original", now)
    tampered = body.replace(b"original", b"tampered")
    replay = bot.sender.post_raw(tampered, timestamp=now, signature=headers["X-Slack-Signature"])
    assert replay.status_code == 401
    time.sleep(0.3)
    assert stored_requests(postgres, bot) == 0
    assert [c.method for c in slack.calls()] == ["auth.test"]


def test_modal_request_with_validation_errors_then_success(
    bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
) -> None:
    sent = bot.sender.slash(REQUESTER, "", channel_id="C0TEAM")
    assert sent.status_code == 200
    opened = slack.wait_for("views.open")
    assert opened.params["trigger_id"] == sent.trigger_id
    view = opened.params["view"]
    assert view["callback_id"] == CallbackId.REQUEST_MODAL
    options = [o["value"] for o in view["blocks"][0]["element"]["options"]]
    assert options == ["orders-logs", "payments-db"]

    def values(duration: str, reason: str) -> dict:
        return {
            BlockId.RESOURCE: {InputId.RESOURCE: bot.sender.selected("payments-db")},
            BlockId.DURATION: {InputId.DURATION: duration},
            BlockId.REASON: {InputId.REASON: reason},
        }

    bad = bot.sender.submit_view(REQUESTER, view, values("9h", "INC-5 via the form"))
    assert bad.json()["response_action"] == "errors"
    assert "longer than this resource allows" in bad.json()["errors"][BlockId.DURATION]
    bad = bot.sender.submit_view(REQUESTER, view, values("30m", "x"))
    assert "reason" in bad.json()["errors"][BlockId.REASON]
    assert stored_requests(postgres, bot) == 0

    good = bot.sender.submit_view(REQUESTER, view, values("45m", "INC-5 via the form"))
    assert good.status_code == 200 and not good.text
    confirmation = slack.wait_for("chat.postEphemeral")
    assert confirmation.params["channel"] == "C0TEAM"
    assert confirmation.params["user"] == REQUESTER
    assert "Request #1" in confirmation.params["text"]
    message = approval_message(slack, 1)
    assert "45m" in blocks_text(message)


def test_list_and_help(bot, slack: SlackEmulator) -> None:
    sent = bot.sender.slash(REQUESTER, "help")
    help_text = ack_text(sent)
    assert "/debug-access revoke <id>" in help_text and "`payments-db`" in help_text
    sent = bot.sender.slash(REQUESTER, "list")
    assert "no pending requests" in reply_to(slack, str(sent.response_key))["text"]
    first = request_access(bot, slack, REQUESTER, "payments-db 30m INC-6 one")
    second = request_access(bot, slack, REQUESTER, "payments-db 2h INC-6 two")
    click(bot, slack, ALICE, approval_message(slack, second), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, second)
    sent = bot.sender.slash(REQUESTER, "list")
    listing = reply_to(slack, str(sent.response_key))["text"]
    assert f"#{first} `payments-db` 30m — waiting for approval" in listing
    assert f"#{second} `payments-db` 2h — active, until" in listing
    wait_until(lambda: True)


# -- issue 9: every bad input gets a clear answer, and nothing is stored half-way ------------------


def forged(message: dict, action_id: str, value: str) -> dict:
    """``message`` as the clicker's client could forge it: the button's value replaced."""
    copy = json.loads(json.dumps(message))
    for block in copy.get("blocks") or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element.get("action_id") == action_id:
                element["value"] = value
    return copy


def active_grant(bot, slack: SlackEmulator, reason: str) -> tuple[int, dict]:
    """A request of REQUESTER's, approved and issued; returns its id and the credentials DM."""
    request_id = request_access(bot, slack, REQUESTER, f"payments-db 30m {reason}")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    return request_id, credentials_message(slack, REQUESTER, request_id)


@pytest.mark.parametrize(
    "text",
    ["revoke 99999999999", "revoke 2147483648", "extend 2147483648 30m", "revoke #9999999999999"],
)
def test_request_ids_past_the_column_range_are_answered(
    bot, slack: SlackEmulator, postgres: PostgresServer, text: str
) -> None:
    sent = bot.sender.slash(REQUESTER, text)
    assert sent.status_code == 200
    answer = ack_text(sent) or reply_to(slack, str(sent.response_key))["text"]
    assert "is not a request id" in answer, answer
    assert stored_requests(postgres, bot) == 0


def test_a_button_value_past_the_column_range_is_answered_and_changes_nothing(
    bot, slack: SlackEmulator, postgres: PostgresServer
) -> None:
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-90 range")
    message = approval_message(slack, request_id)
    for action_id in (ActionId.APPROVE, ActionId.DENY):
        answer = click(bot, slack, ALICE, forged(message, action_id, "2147483648"), action_id)
        assert "`2147483648` is not a request id" in answer["text"], answer
        assert answer.get("response_type", "ephemeral") == "ephemeral"
    assert request_status_of(postgres, bot, request_id) == "pending"
    assert bot_rows(postgres, bot, "SELECT count(*) FROM decision")[0][0] == 0


def request_status_of(postgres: PostgresServer, bot, request_id: int) -> str:
    return str(
        bot_rows(postgres, bot, f"SELECT status FROM access_request WHERE id={request_id}")[0][0]
    )


def open_request_form(bot, slack: SlackEmulator) -> dict:
    sent = bot.sender.slash(REQUESTER, "", channel_id="C0TEAM")
    return slack.wait_for("views.open", lambda c: c.params["trigger_id"] == sent.trigger_id).params[
        "view"
    ]


@pytest.mark.parametrize(
    "channel",
    ["C" + "A" * 40, "C0TEAM\u0000", "c0team", 12345, "C0TEAM\nERROR forged"],
    ids=["too-long", "nul-byte", "lowercase", "number", "newline"],
)
def test_a_request_form_with_a_damaged_channel_is_refused_and_stores_nothing(
    bot, slack: SlackEmulator, postgres: PostgresServer, channel: object
) -> None:
    view = open_request_form(bot, slack)
    view["private_metadata"] = json.dumps({"channel": channel})
    sent = bot.sender.submit_view(
        REQUESTER,
        view,
        {
            BlockId.RESOURCE: {InputId.RESOURCE: bot.sender.selected("payments-db")},
            BlockId.DURATION: {InputId.DURATION: "30m"},
            BlockId.REASON: {InputId.REASON: "INC-91 damaged form"},
        },
    )
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["response_action"] == "errors", answer
    assert "open it again" in json.dumps(answer["errors"]), answer
    time.sleep(0.3)
    assert stored_requests(postgres, bot) == 0
    assert posts_to(slack, APPROVALS) == []


def test_extend_refuses_other_peoples_grants_and_damaged_forms(
    bot, slack: SlackEmulator, postgres: PostgresServer
) -> None:
    request_id, credentials = active_grant(bot, slack, "INC-92 extend rules")
    opened = len(slack.calls("views.open"))
    # Someone else's Extend click is refused at once, and shows nothing of the grant.
    answer = click(bot, slack, MALLORY, credentials, ActionId.EXTEND)
    assert "Only the requester can ask to extend" in answer["text"], answer
    time.sleep(0.3)
    assert len(slack.calls("views.open")) == opened
    # A forged value past the column range is answered too.
    answer = click(
        bot, slack, REQUESTER, forged(credentials, ActionId.EXTEND, "2147483648"), ActionId.EXTEND
    )
    assert "is not a request id" in answer["text"], answer

    # The owner's click opens the form; a submission by anyone else is refused.
    bot.sender.click(REQUESTER, credentials, ActionId.EXTEND)
    form = slack.wait_for(
        "views.open", lambda c: c.params["view"]["callback_id"] == CallbackId.EXTEND_MODAL
    ).params["view"]
    values = {BlockId.EXTEND_DURATION: {InputId.EXTEND_DURATION: "30m"}}
    refused = bot.sender.submit_view(MALLORY, form, values).json()
    assert refused["response_action"] == "errors"
    assert "Only the requester" in refused["errors"][BlockId.EXTEND_DURATION]
    # Damaged metadata: a clear form error, never an exception.
    for metadata in (
        '{"request_id": 1e30}',
        '{"request_id": 2147483648}',
        '{"request_id": "99999999999"}',
        '{"request_id": Infinity}',
        '{"request_id": true}',
        '{"request_id": -1}',
        "[1]",
    ):
        damaged = dict(form, private_metadata=metadata)
        sent = bot.sender.submit_view(REQUESTER, damaged, values)
        assert sent.status_code == 200, (metadata, sent.text)
        assert sent.json()["response_action"] == "errors", metadata
        assert "out of date" in sent.json()["errors"][BlockId.EXTEND_DURATION], metadata
    assert bot_rows(postgres, bot, "SELECT id FROM access_request") == [(request_id,)]
    assert "Unhandled" not in bot.log_text() and "unhandled" not in bot.log_text()


def test_a_slash_command_whose_text_says_payload_is_handled(
    bot, slack: SlackEmulator, postgres: PostgresServer
) -> None:
    text = "payments-db 30m INC-77 payload service returns 500s"
    request_id = request_access(bot, slack, REQUESTER, text)
    assert "payload service returns 500s" in blocks_text(approval_message(slack, request_id))
    stored = bot_rows(postgres, bot, f"SELECT reason FROM access_request WHERE id={request_id}")
    assert stored[0][0] == "INC-77 payload service returns 500s"
    # The word in a key's position, or as a whole value, is still just text.
    for text in ("payload", "help payload=1&payload", "list payload"):
        sent = bot.sender.slash(REQUESTER, text)
        assert sent.status_code == 200, (text, sent.text)


FORGED_LINE = "2026-01-01 00:00:00,000 ERROR bot.audit: audit chain broken at row 1"


@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_a_forged_action_id_cannot_write_a_line_into_the_log(
    bot, slack: SlackEmulator, postgres: PostgresServer, breaker: str
) -> None:
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-93 log forging")
    message = json.loads(json.dumps(approval_message(slack, request_id)))
    forged_id = f"approve{breaker}{FORGED_LINE}"
    for block in message["blocks"]:
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            if element["action_id"] == ActionId.APPROVE:
                element["action_id"] = forged_id
    sent = bot.sender.click(ALICE, message, forged_id)
    assert sent.status_code == 404  # Bolt's answer to an action nobody listens for
    wait_until(lambda: "Unhandled request" in bot.log_text(), what="Bolt's unhandled warning")
    lines = bot.log_text().replace("\r", "\n").splitlines()
    assert not [line for line in lines if line.startswith(FORGED_LINE)], bot.log_text()[-3000:]
    assert f"approve{breaker.encode('unicode_escape').decode()}{FORGED_LINE}" in bot.log_text()
    assert request_status_of(postgres, bot, request_id) == "pending"
