"""Deliver requests to the bot exactly the way Slack does: signed, form-encoded HTTP POSTs.

Why build payloads from what the bot actually posted: a click test should prove that the
button really exists in the bot's current message (and is gone after a decision), not that a
hand-written payload happens to match a handler. `click()` therefore looks the element up in the
message blocks and fails if it is absent.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import requests
from slack_sdk.signature import SignatureVerifier

from tests.emulators.slack_api import Call, SlackEmulator

FORM = "application/x-www-form-urlencoded"


@dataclass
class SentRequest:
    """What a delivery produced: the bot's HTTP response plus ids needed to follow up.

    Delegates `status_code`, `text`, `json()` to the response so it can be used like one.
    """

    response: requests.Response
    response_key: str | None = None
    trigger_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def status_code(self) -> int:
        """HTTP status the bot answered with."""
        return self.response.status_code

    @property
    def text(self) -> str:
        """Raw response body (Bolt acks are often empty)."""
        return self.response.text

    def json(self) -> Any:
        """Decoded JSON body (e.g. a view_submission `response_action`)."""
        return self.response.json()


class SlackRequestSender:
    """Signs and sends slash commands, block actions and view submissions to the bot."""

    def __init__(
        self,
        bot_url: str,
        signing_secret: str,
        emulator: SlackEmulator,
        team_id: str = "T0TEAM",
        team_domain: str = "t0team",
        api_app_id: str = "A0APP",
        timeout: float = 30.0,
    ) -> None:
        """`bot_url` is the bot's events endpoint, e.g. http://127.0.0.1:3000/slack/events."""
        self.bot_url = bot_url
        self.signing_secret = signing_secret
        self.emulator = emulator
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.timeout = timeout
        self.verification_token = "legacy-verification-token"
        self.last_response_key: str | None = None
        # Exactly what was last sent, so replay tests can resend it byte for byte.
        self.last_body: bytes | None = None
        self.last_headers: dict[str, str] = {}
        self._verifier = SignatureVerifier(signing_secret)
        self._counter = itertools.count(1)
        # Loopback only: never let proxy variables route test traffic elsewhere.
        self._session = requests.Session()
        self._session.trust_env = False

    # ------------------------------------------------------------------ low level

    def sign(self, body: bytes | str, timestamp: int | None = None) -> dict[str, str]:
        """Headers Slack would send for `body` at `timestamp` (default: now)."""
        if timestamp is None:
            timestamp = int(time.time())
        text = body.decode() if isinstance(body, bytes) else body
        signature = self._verifier.generate_signature(timestamp=str(timestamp), body=text)
        assert signature is not None
        return {
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature,
        }

    def post_raw(
        self,
        body: bytes | str,
        timestamp: int | None = None,
        signature: str | None = None,
        content_type: str = FORM,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """POST `body` as-is; sign correctly unless `signature` is given.

        For forged (`signature="v0=bad"`), stale (`timestamp=int(time.time()) - 600`, still
        correctly signed) and replayed requests (resend `last_body` with `last_headers`).
        """
        raw = body.encode() if isinstance(body, str) else body
        if timestamp is None:
            timestamp = int(time.time())
        sent_headers = self.sign(raw, timestamp)
        if signature is not None:
            sent_headers["X-Slack-Signature"] = signature
        sent_headers["Content-Type"] = content_type
        sent_headers.update(headers or {})
        self.last_body = raw
        self.last_headers = dict(sent_headers)
        return self._session.post(
            self.bot_url, data=raw, headers=sent_headers, timeout=self.timeout
        )

    def replay_last(self) -> requests.Response:
        """Resend the previous request unchanged (same body, timestamp and signature)."""
        if self.last_body is None:
            raise AssertionError("nothing was sent yet")
        return self._session.post(
            self.bot_url, data=self.last_body, headers=self.last_headers, timeout=self.timeout
        )

    def get(self, path: str) -> requests.Response:
        """GET a path on the bot's server (e.g. "/healthz"), unsigned."""
        parts = urllib.parse.urlsplit(self.bot_url)
        return self._session.get(f"{parts.scheme}://{parts.netloc}{path}", timeout=self.timeout)

    def post_form(self, fields: dict[str, str]) -> requests.Response:
        """Form-encode, sign and POST `fields`."""
        return self.post_raw(urllib.parse.urlencode(fields))

    def post_payload(self, payload: dict[str, Any]) -> requests.Response:
        """Interactive requests arrive as a single form field `payload` holding JSON."""
        return self.post_form({"payload": json.dumps(payload)})

    def event(self, event: dict[str, Any]) -> requests.Response:
        """Deliver an Events API callback (JSON body, signed), e.g. app_home_opened."""
        body = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.emulator.bot_user_id, "is_bot": True}
            ],
            "event": event,
        }
        return self.post_raw(json.dumps(body), content_type="application/json")

    def new_trigger_id(self) -> str:
        """Unique trigger ids, shaped like Slack's."""
        return f"{next(self._counter)}.{int(time.time())}.{secrets.token_hex(16)}"

    def _user(self, user_id: str) -> dict[str, Any]:
        name = user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _team(self) -> dict[str, Any]:
        return {"id": self.team_id, "domain": self.team_domain}

    # ------------------------------------------------------------------ slash commands

    def slash(
        self,
        user_id: str,
        text: str,
        channel_id: str = "C0GENERAL",
        command: str = "/debug-access",
        response_key: str | None = None,
        channel_name: str = "general",
    ) -> SentRequest:
        """Send a slash command; `.response_key` identifies its response_url deliveries."""
        key = response_key or f"slash-{secrets.token_hex(6)}"
        trigger_id = self.new_trigger_id()
        fields = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self.emulator.response_url(key),
            "trigger_id": trigger_id,
        }
        self.last_response_key = key
        response = self.post_form(fields)
        return SentRequest(response, key, trigger_id, dict(fields))

    # ------------------------------------------------------------------ block actions

    def _resolve_message(self, message: dict[str, Any] | Call) -> dict[str, Any]:
        """Accept a stored message, a chat.postMessage/update Call, or such a Call's params."""
        if isinstance(message, Call):
            return self._message_from_call(message)
        if "ts" not in message:
            for call in self.emulator.calls():
                if call.params is message:
                    return self._message_from_call(call)
            raise AssertionError(
                "message has no 'ts': pass emulator.messages(channel)[i], or the Call itself"
            )
        return message

    def _message_from_call(self, call: Call) -> dict[str, Any]:
        response = call.response or {}
        if not response.get("ok"):
            raise AssertionError(f"{call.method} call failed, no message to click: {response}")
        return self.emulator.message(response["channel"], response["ts"])

    @staticmethod
    def find_element(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]]:
        """Return (block_id, element) for `action_id`; AssertionError listing ids if absent."""
        seen: list[str] = []
        for block in blocks or []:
            candidates: list[dict[str, Any]] = []
            if block.get("type") == "actions":
                candidates.extend(block.get("elements", []))
            if isinstance(block.get("accessory"), dict):
                candidates.append(block["accessory"])
            if block.get("type") == "input" and isinstance(block.get("element"), dict):
                candidates.append(block["element"])
            for element in candidates:
                seen.append(str(element.get("action_id")))
                if element.get("action_id") == action_id:
                    return str(block.get("block_id") or secrets.token_hex(3)), element
        raise AssertionError(
            f"no element with action_id {action_id!r}; action_ids present: {seen or 'none'}"
        )

    @staticmethod
    def _action(
        block_id: str, element: dict[str, Any], selected_value: str | None
    ) -> dict[str, Any]:
        kind = element.get("type", "button")
        action: dict[str, Any] = {
            "action_id": element.get("action_id"),
            "block_id": block_id,
            "type": kind,
            "action_ts": f"{time.time():.6f}",
        }
        if "text" in element:
            action["text"] = element["text"]
        if "value" in element:
            action["value"] = element["value"]
        if kind in ("static_select", "external_select", "radio_buttons", "overflow"):
            options = [o for g in element.get("option_groups", []) for o in g.get("options", [])]
            options += element.get("options", [])
            if selected_value is None:
                if not options:
                    raise AssertionError(f"{kind} has no options to choose")
                chosen = options[0]
            else:
                match = [o for o in options if o.get("value") == selected_value]
                if not match:
                    values = [o.get("value") for o in options]
                    raise AssertionError(f"option {selected_value!r} not in {values}")
                chosen = match[0]
            action["selected_option"] = chosen
        elif selected_value is not None:
            action["value"] = selected_value
        return action

    def click(
        self,
        user_id: str,
        message: dict[str, Any] | Call,
        action_id: str,
        selected_value: str | None = None,
        response_key: str | None = None,
    ) -> SentRequest:
        """Click `action_id` in a message the bot posted.

        `message` is a dict with channel, ts, blocks (e.g. `emulator.messages(ch)[-1]`) or a
        recorded chat.postMessage Call (or its params). Raises AssertionError when the element
        is not in the message, which is how tests prove a button disappeared.
        """
        msg = self._resolve_message(message)
        channel = str(msg.get("channel") or msg.get("channel_id") or "")
        block_id, element = self.find_element(msg.get("blocks") or [], action_id)
        key = response_key or f"click-{secrets.token_hex(6)}"
        trigger_id = self.new_trigger_id()
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {
                "type": "message",
                "message_ts": msg["ts"],
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": channel.lower()},
            "message": {
                "type": "message",
                "ts": msg["ts"],
                "text": msg.get("text", ""),
                "blocks": msg.get("blocks") or [],
                "user": self.emulator.bot_user_id,
                "bot_id": self.emulator.bot_id,
            },
            "state": {"values": {}},
            "response_url": self.emulator.response_url(key),
            "actions": [self._action(block_id, element, selected_value)],
        }
        self.last_response_key = key
        return SentRequest(self.post_payload(payload), key, trigger_id, payload)

    def _view_payload(
        self, view: dict[str, Any], values: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "id": view.get("id") or self.emulator._next_id("V"),
            "team_id": self.team_id,
            "type": view.get("type", "modal"),
            "blocks": view.get("blocks") or [],
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": values},
            "hash": view.get("hash", secrets.token_hex(6)),
            "title": view.get("title"),
            "submit": view.get("submit"),
            "close": view.get("close"),
            "external_id": view.get("external_id", ""),
            "root_view_id": view.get("root_view_id") or view.get("id"),
            "previous_view_id": None,
            "app_id": self.api_app_id,
            "bot_id": self.emulator.bot_id,
        }

    def click_in_view(
        self,
        user_id: str,
        view: dict[str, Any],
        action_id: str,
        selected_value: str | None = None,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> SentRequest:
        """Click an element in App Home or a modal (`view` as published/opened by the bot)."""
        block_id, element = self.find_element(view.get("blocks") or [], action_id)
        trigger_id = self.new_trigger_id()
        view_payload = self._view_payload(view, self.state_values(values or {}))
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {"type": "view", "view_id": view_payload["id"]},
            "trigger_id": trigger_id,
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view_payload,
            "actions": [self._action(block_id, element, selected_value)],
        }
        return SentRequest(self.post_payload(payload), None, trigger_id, payload)

    # ------------------------------------------------------------------ view submissions

    @staticmethod
    def state_values(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Wrap plain strings as plain_text_input states; pass dicts through unchanged."""
        out: dict[str, dict[str, Any]] = {}
        for block_id, actions in values.items():
            out[block_id] = {}
            for action_id, state in actions.items():
                if isinstance(state, str) or state is None:
                    out[block_id][action_id] = {"type": "plain_text_input", "value": state}
                else:
                    out[block_id][action_id] = state
        return out

    @staticmethod
    def selected(value: str, text: str | None = None) -> dict[str, Any]:
        """A static_select state value for `values=`."""
        return {
            "type": "static_select",
            "selected_option": {
                "value": value,
                "text": {"type": "plain_text", "text": text or value, "emoji": True},
            },
        }

    def submit_view(
        self,
        user_id: str,
        view: dict[str, Any],
        values: dict[str, dict[str, Any]],
    ) -> SentRequest:
        """Submit a modal the bot opened.

        `view` is the recorded `views.open` param (or `emulator.view(id)`); `values` maps
        block_id -> action_id -> state dict, or a plain string for plain_text_input.
        """
        trigger_id = self.new_trigger_id()
        payload: dict[str, Any] = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": trigger_id,
            "view": self._view_payload(view, self.state_values(values)),
            "response_urls": [],
            "enterprise": None,
            "is_enterprise_install": False,
        }
        return SentRequest(self.post_payload(payload), None, trigger_id, payload)
