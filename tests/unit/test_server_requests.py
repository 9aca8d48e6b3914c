"""The HTTP edge hands Bolt a correctly parsed request: a slash command whose text says
"payload" is a slash command (slack_bolt's own parser takes it for an interactive payload)."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from slack_bolt import App, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request import BoltRequest

from bot.server import SlackHttpRequest, form_fields

FORM = {"content-type": "application/x-www-form-urlencoded"}


def command(text: str) -> str:
    return urllib.parse.urlencode(
        {
            "team_id": "T0TEAM",
            "user_id": "U0CAROL",
            "channel_id": "C0GENERAL",
            "command": "/debug-access",
            "text": text,
            "response_url": "http://127.0.0.1:9/r",
            "trigger_id": "1.2.3",
        }
    )


@pytest.mark.parametrize(
    "text",
    [
        "payments-db 30m INC-77 payload service returns 500s",
        "payload",
        "payload=1&payload=2",
        "help payload={}",
        "",
    ],
)
def test_a_slash_command_is_parsed_by_its_keys(text: str) -> None:
    request = SlackHttpRequest(body=command(text), headers=FORM)
    assert request.body["command"] == "/debug-access"
    assert request.body["text"] == text
    assert request.context["user_id"] == "U0CAROL"
    assert request.context["channel_id"] == "C0GENERAL"
    assert request.context["response_url"] == "http://127.0.0.1:9/r"
    copy = request.to_copyable()
    assert (type(copy), copy.body) == (SlackHttpRequest, request.body)


def test_bolt_alone_loses_such_a_command() -> None:
    """What the HTTP edge works around (slack_bolt 1.30 ``parse_body``); when this starts
    failing, Bolt has fixed it and ``SlackHttpRequest`` can go."""
    text = "payments-db 30m INC-77 payload service returns 500s"
    assert BoltRequest(body=command(text), headers=FORM).body == {}


def test_interactive_payloads_and_json_are_left_to_bolt() -> None:
    payload = {"type": "block_actions", "user": {"id": "U0CAROL"}, "actions": []}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    assert form_fields(body, "application/x-www-form-urlencoded") is None
    assert SlackHttpRequest(body=body, headers=FORM).body == payload
    event = json.dumps({"type": "event_callback", "text": "payload"})
    assert form_fields(event, "application/json") is None
    assert form_fields(event, None) is None
    assert form_fields("", None) is None


def test_the_command_reaches_its_listener() -> None:
    """Dispatched through a real App (signatures off here; the end-to-end test signs)."""
    app = App(
        signing_secret="secret",
        request_verification_enabled=False,
        authorize=lambda **_: AuthorizeResult(
            enterprise_id=None, team_id="T0TEAM", bot_token="xoxb-test", bot_user_id="U0BOT"
        ),
    )
    heard: list[str] = []

    @app.command("/debug-access")
    def listener(ack, command) -> None:  # type: ignore[no-untyped-def]
        heard.append(command["text"])
        ack()

    text = "orders-logs 1h INC-78 the payload queue is stuck"
    response: BoltResponse = app.dispatch(SlackHttpRequest(body=command(text), headers=FORM))
    assert (response.status, heard) == (200, [text])
    assert app.dispatch(BoltRequest(body=command(text), headers=FORM)).status == 404
