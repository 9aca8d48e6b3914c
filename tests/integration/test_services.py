"""Smoke tests for the test infrastructure itself.

Why: every end-to-end test trusts these fixtures. If the emulator silently accepted a bad
token, or Vault revocation did not really drop the PostgreSQL role, bot tests would pass for
the wrong reasons. These tests fail loudly when the harness lies.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import psycopg
import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from tests.emulators.slack_api import SlackEmulator
from tests.emulators.slack_client import SlackRequestSender
from tests.integration.services import OpenBaoServer, PostgresServer, VaultDatabase

# ---------------------------------------------------------------------------- real services


@pytest.mark.integration
def test_vault_issues_working_db_credentials_and_revocation_removes_them(
    postgres: PostgresServer, openbao: OpenBaoServer, vault_db: VaultDatabase
) -> None:
    client = openbao.client()
    secret = client.read(vault_db.path)
    assert secret is not None
    username = secret["data"]["username"]
    password = secret["data"]["password"]
    lease_id = secret["lease_id"]
    assert lease_id.startswith(f"{vault_db.path}/")
    assert secret["lease_duration"] == 3600  # role default_ttl 1h
    assert postgres.role_exists(username)

    with postgres.connect_as(username, password, vault_db.dbname) as conn:
        rows = conn.execute("SELECT id, status FROM payments ORDER BY id").fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]
        # Read-only: the role got SELECT only.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE payments SET status = 'x' WHERE id = 1")

    # A live session must be killed by revocation (pg_terminate_backend in the statements).
    session = postgres.connect_as(username, password, vault_db.dbname)
    client.write_data(f"sys/leases/revoke/{lease_id}", data={"sync": True})

    assert not postgres.role_exists(username)
    with pytest.raises(psycopg.OperationalError):
        postgres.connect_as(username, password, vault_db.dbname).close()
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()

    lookup = requests.Session()
    lookup.trust_env = False
    answer = lookup.put(
        f"{openbao.addr}/v1/sys/leases/lookup",
        json={"lease_id": lease_id},
        headers={"X-Vault-Token": openbao.root_token},
        timeout=10,
    )
    assert answer.status_code == 400  # revoked lease: "invalid lease"


@pytest.mark.integration
def test_postgres_helpers(postgres: PostgresServer, bot_db_url: str) -> None:
    assert bot_db_url.startswith("postgresql+psycopg://postgres:")
    assert f"@127.0.0.1:{postgres.port}/bot_" in bot_db_url
    dbname = urllib.parse.urlsplit(bot_db_url).path.lstrip("/")
    with postgres.connect(dbname) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (dbname,)
    assert not postgres.role_exists("no_such_role_here")
    with pytest.raises(psycopg.OperationalError):
        postgres.connect_as(postgres.superuser, "wrong-password").close()


@pytest.mark.integration
def test_sqlalchemy_url_works(postgres: PostgresServer, bot_db_url: str) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(bot_db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- Slack emulator


def _client(slack: SlackEmulator, token: str | None = None) -> WebClient:
    return WebClient(token=token or slack.bot_token, base_url=slack.base_url)


def test_emulator_auth_post_update(slack: SlackEmulator) -> None:
    client = _client(slack)
    auth = client.auth_test()
    assert auth["user_id"] == "U0BOT"
    assert auth["team_id"] == "T0TEAM"
    assert auth["bot_id"]

    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Request *42*"}},
        {
            "type": "actions",
            "block_id": "decision",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "value": "42",
                    "text": {"type": "plain_text", "text": "Approve"},
                }
            ],
        },
    ]
    first = client.chat_postMessage(channel="C0APPROVALS", text="Request 42", blocks=blocks)
    second = client.chat_postMessage(channel="C0APPROVALS", text="another")
    assert first["ok"]
    assert first["ts"] < second["ts"]
    assert first["message"]["blocks"][1]["elements"][0]["action_id"] == "approve"

    client.chat_update(channel="C0APPROVALS", ts=first["ts"], text="Approved", blocks=[])
    messages = slack.messages("C0APPROVALS")
    assert [m["text"] for m in messages] == ["Approved", "another"]
    assert messages[0]["blocks"] == []
    assert slack.message("C0APPROVALS", first["ts"])["text"] == "Approved"

    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C0APPROVALS", ts="1.000000", text="x")
    assert err.value.response["error"] == "message_not_found"

    call = slack.wait_for("chat.postMessage", lambda c: c.params.get("text") == "Request 42")
    assert call.params["blocks"][0]["type"] == "section"  # decoded whatever the encoding
    assert any("Request *42*" in text for text in slack.all_texts())


def test_emulator_dm_views_users_groups(slack: SlackEmulator) -> None:
    client = _client(slack)
    opened = client.conversations_open(users="U123")
    assert opened["channel"]["id"] == slack.dm_channel("U123") == "DU123"
    client.chat_postMessage(channel="U123", text="hello via user id")
    assert slack.messages("DU123")[0]["text"] == "hello via user id"

    view = {
        "type": "modal",
        "callback_id": "request_modal",
        "private_metadata": "meta",
        "title": {"type": "plain_text", "text": "Request"},
        "blocks": [
            {
                "type": "input",
                "block_id": "b",
                "element": {"type": "plain_text_input", "action_id": "a"},
                "label": {"type": "plain_text", "text": "L"},
            }
        ],
    }
    answer = client.views_open(trigger_id="123.456.abc", view=view)
    view_id = answer["view"]["id"]
    assert view_id.startswith("V")
    assert answer["view"]["callback_id"] == "request_modal"
    recorded = slack.wait_for("views.open").params["view"]
    assert recorded["private_metadata"] == "meta"
    assert recorded["id"] == view_id
    client.views_update(view_id=view_id, view={**view, "private_metadata": "v2"})
    assert slack.view(view_id)["private_metadata"] == "v2"
    client.views_publish(user_id="U123", view={"type": "home", "blocks": []})
    assert slack.home_view("U123")["type"] == "home"

    user = client.users_info(user="U123")["user"]
    assert user["tz"] == "Europe/Berlin"
    assert user["profile"]["email"] == "u123@example.com"
    assert client.users_lookupByEmail(email="u123@example.com")["user"]["id"] == "U123"
    with pytest.raises(SlackApiError) as err:
        client.users_lookupByEmail(email="nobody@elsewhere.test")
    assert err.value.response["error"] == "users_not_found"

    slack.usergroups["S0ONCALL"] = ["U1", "U2"]
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as err:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert err.value.response["error"] == "no_such_subteam"

    posted = client.chat_postMessage(channel="C1", text="x")
    link = client.chat_getPermalink(channel="C1", message_ts=posted["ts"])
    assert link["permalink"].endswith(posted["ts"].replace(".", ""))
    assert client.chat_postEphemeral(channel="C1", user="U123", text="e")["message_ts"]


def test_emulator_rejects_bad_token_and_injects_faults(slack: SlackEmulator) -> None:
    with pytest.raises(SlackApiError) as err:
        _client(slack, token="xoxb-wrong").chat_postMessage(channel="C1", text="nope")
    assert err.value.response["error"] == "invalid_auth"
    assert slack.messages("C1") == []

    client = _client(slack)
    slack.fail_next("chat.postMessage", "channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel="C1", text="x")
        assert err.value.response["error"] == "channel_not_found"
    assert client.chat_postMessage(channel="C1", text="third time")["ok"]

    slack.fail_next("users.info", "fatal_error", status=500)
    with pytest.raises(SlackApiError) as err:
        client.users_info(user="U1")
    assert err.value.response.status_code == 500

    with pytest.raises(SlackApiError) as err:
        client.api_call("made.up.method")
    assert err.value.response["error"] == "unknown_method"
    assert slack.calls("made.up.method")

    with pytest.raises(AssertionError, match="Recorded calls"):
        slack.wait_for("chat.delete", timeout=0.3)
    assert len(slack.wait_for_count("chat.postMessage", 3, timeout=1)) == 3
    slack.clear()
    assert slack.calls() == []


def test_emulator_response_url(slack: SlackEmulator) -> None:
    url = slack.response_url("abc")
    session = requests.Session()
    session.trust_env = False
    answer = session.post(url, json={"text": "done", "replace_original": True}, timeout=5)
    assert answer.status_code == 200
    call = slack.wait_for("response_url", lambda c: c.params["key"] == "abc")
    assert call.params["text"] == "done"
    assert slack.response_url() != slack.response_url()


# ---------------------------------------------------------------------------- request sender


class _Capture:
    """A tiny HTTP sink standing in for the bot, to inspect what the sender delivers."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _payload(body: bytes) -> dict[str, object]:
    fields = dict(urllib.parse.parse_qsl(body.decode()))
    decoded: dict[str, object] = json.loads(fields["payload"])
    return decoded


def test_sender_signs_like_slack(slack: SlackEmulator) -> None:
    sink = _Capture()
    try:
        sender = SlackRequestSender(sink.url, "s3cret", slack)
        verifier = SignatureVerifier("s3cret")

        result = sender.slash("U123", "payments-db 30m because incident")
        assert result.status_code == 200
        _, headers, body = sink.requests[-1]
        assert verifier.is_valid(
            body=body.decode(),
            timestamp=headers["X-Slack-Request-Timestamp"],
            signature=headers["X-Slack-Signature"],
        )
        fields = dict(urllib.parse.parse_qsl(body.decode()))
        assert fields["command"] == "/debug-access"
        assert fields["response_url"] == slack.response_url(result.response_key)
        assert sender.last_response_key == result.response_key
        assert not SignatureVerifier("other").is_valid(
            body=body.decode(),
            timestamp=headers["X-Slack-Request-Timestamp"],
            signature=headers["X-Slack-Signature"],
        )

        stale = int(time.time()) - 600
        sender.post_raw("a=b", timestamp=stale)
        _, headers, body = sink.requests[-1]
        assert headers["X-Slack-Request-Timestamp"] == str(stale)
        # Correctly signed, yet rejected by Slack's verifier because it is too old.
        assert headers["X-Slack-Signature"] == verifier.generate_signature(
            timestamp=str(stale), body="a=b"
        )
        assert not verifier.is_valid(
            body="a=b", timestamp=str(stale), signature=headers["X-Slack-Signature"]
        )
        sender.post_raw("a=b", signature="v0=forged")
        assert sink.requests[-1][1]["X-Slack-Signature"] == "v0=forged"
        sender.replay_last()
        replayed, original = sink.requests[-1][1], sink.requests[-2][1]
        assert replayed["X-Slack-Signature"] == original["X-Slack-Signature"]
        assert sink.requests[-1][2] == sink.requests[-2][2]
        assert sender.get("/healthz").status_code == 200
        assert sink.requests[-1][0] == "/healthz"
    finally:
        sink.close()


def test_sender_click_and_submit(slack: SlackEmulator) -> None:
    sink = _Capture()
    try:
        sender = SlackRequestSender(sink.url, "s3cret", slack)
        client = _client(slack)
        client.chat_postMessage(
            channel="C0APPROVALS",
            text="Request 7",
            blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "Request 7"}},
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "approve",
                            "value": "req-7",
                            "text": {"type": "plain_text", "text": "Approve"},
                        },
                        {
                            "type": "button",
                            "action_id": "deny",
                            "value": "req-7",
                            "text": {"type": "plain_text", "text": "Deny"},
                        },
                    ],
                },
            ],
        )
        message = slack.messages("C0APPROVALS")[-1]
        sender.click("U0APPROVER", message, "approve")
        payload = _payload(sink.requests[-1][2])
        assert payload["type"] == "block_actions"
        assert payload["container"] == {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": "C0APPROVALS",
            "is_ephemeral": False,
        }
        action = payload["actions"][0]  # type: ignore[index]
        assert action["action_id"] == "approve"
        assert action["value"] == "req-7"
        assert action["block_id"]  # Slack-assigned ids are mirrored by the emulator

        # The recorded Call (or its params) works too.
        call = slack.wait_for("chat.postMessage")
        sender.click("U0APPROVER", call, "deny")
        sender.click("U0APPROVER", call.params, "deny")

        client.chat_update(
            channel="C0APPROVALS",
            ts=message["ts"],
            text="Approved",
            blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "Approved"}}],
        )
        with pytest.raises(AssertionError, match="approve"):
            sender.click("U0APPROVER", slack.messages("C0APPROVALS")[-1], "approve")

        view = {
            "type": "modal",
            "callback_id": "request_modal",
            "private_metadata": "pm",
            "blocks": [
                {
                    "type": "input",
                    "block_id": "duration",
                    "label": {"type": "plain_text", "text": "Duration"},
                    "element": {"type": "plain_text_input", "action_id": "value"},
                }
            ],
        }
        client.views_open(trigger_id="t", view=view)
        opened = slack.wait_for("views.open").params["view"]
        sender.submit_view(
            "U123",
            opened,
            {
                "duration": {"value": "30m"},
                "target": {"value": SlackRequestSender.selected("payments-db")},
            },
        )
        submitted = _payload(sink.requests[-1][2])
        assert submitted["type"] == "view_submission"
        sent_view = submitted["view"]
        assert isinstance(sent_view, dict)
        assert sent_view["id"] == opened["id"]
        assert sent_view["callback_id"] == "request_modal"
        assert sent_view["private_metadata"] == "pm"
        values = sent_view["state"]["values"]
        assert values["duration"]["value"] == {"type": "plain_text_input", "value": "30m"}
        assert values["target"]["value"]["selected_option"]["value"] == "payments-db"

        client.views_publish(
            user_id="U123",
            view={
                "type": "home",
                "blocks": [
                    {
                        "type": "actions",
                        "block_id": "home",
                        "elements": [
                            {
                                "type": "button",
                                "action_id": "refresh",
                                "value": "r",
                                "text": {"type": "plain_text", "text": "Refresh"},
                            }
                        ],
                    }
                ],
            },
        )
        sender.click_in_view("U123", slack.home_view("U123"), "refresh")
        clicked = _payload(sink.requests[-1][2])
        assert clicked["container"] == {"type": "view", "view_id": slack.home_view("U123")["id"]}
    finally:
        sink.close()
