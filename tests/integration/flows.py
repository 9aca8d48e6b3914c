"""Steps of the end-to-end flows, written the way a person in Slack performs them.

Each helper drives the real bot over signed HTTP and reads what it sent through the Slack
emulator; none of them reaches into the bot's process. Checks on state read the bot's own
PostgreSQL database, and checks on access use the real OpenBao and PostgreSQL.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import hvac
import psycopg

from tests.emulators.slack_api import Call, SlackEmulator
from tests.integration.services import BotProcess, OpenBaoServer, PostgresServer

APPROVALS = "C0APPROVALS"
AUDIT = "C0AUDIT"
REQUESTER = "U0REQUESTER"
ALICE = "U0ALICE"
BOB = "U0BOB"
MALLORY = "U0MALLORY"

REQUEST_ID = re.compile(r"Request #(\d+)")


def policy_for(vault_path: str, **overrides: Any) -> dict[str, Any]:
    """The policy most tests run with: one database resource and one Vault-policy resource."""
    policy: dict[str, Any] = {
        "channels": {"approvals": APPROVALS, "audit": AUDIT},
        "delivery": "wrapped",
        "resources": {
            "payments-db": {
                "description": "Read-only SQL on the payments replica",
                "grant": {"type": "dynamic_secret", "path": vault_path},
                "default_duration": "30m",
                "max_duration": "4h",
                "approvers": [ALICE, BOB],
            },
            "orders-logs": {
                "description": "Read the orders service's secrets",
                "grant": {"type": "vault_token", "policies": ["orders-logs-read"]},
                "max_duration": "2h",
                "approvers": [ALICE],
            },
        },
    }
    policy.update(overrides)
    return policy


def legacy_policy_for(vault_path: str, **overrides: Any) -> dict[str, Any]:
    """``policy_for`` written with the keys from before ``grant:`` (``vault_path`` and
    ``vault_policies``): what the last release reads, and what this one must still read."""
    policy = policy_for(vault_path, **overrides)
    for resource in policy["resources"].values():
        grant = resource.pop("grant")
        if grant["type"] == "dynamic_secret":
            resource["vault_path"] = grant["path"]
        else:
            resource["vault_policies"] = grant["policies"]
    return policy


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.1)


def reply_to(slack: SlackEmulator, key: str, timeout: float = 15.0) -> dict[str, Any]:
    """The (ephemeral) message the bot posted to a request's response_url."""
    call = slack.wait_for("response_url", lambda c: c.params.get("key") == key, timeout)
    return call.params


def ack_text(sent: Any) -> str:
    """The text in the bot's immediate HTTP answer (an ack with a message), or ''."""
    body = sent.text
    if not body:
        return ""
    try:
        return str(json.loads(body).get("text", ""))
    except ValueError:
        return body


def request_access(bot: BotProcess, slack: SlackEmulator, user: str, text: str) -> int:
    """Run ``/debug-access <text>`` and return the new request id from the receipt."""
    sent = bot.sender.slash(user, text)
    assert sent.status_code == 200, sent.text
    reply = reply_to(slack, str(sent.response_key))
    assert reply.get("response_type", "ephemeral") == "ephemeral"
    match = REQUEST_ID.search(str(reply.get("text")))
    assert match, f"no request id in the receipt: {reply}"
    return int(match.group(1))


def _is_request_message(message: dict[str, Any], request_id: int) -> bool:
    return (
        re.match(
            rf"(Access request|Extension request|Break-glass access) #{request_id}:",
            str(message.get("text", "")),
        )
        is not None
    )


def approval_messages(slack: SlackEmulator, request_id: int) -> list[dict[str, Any]]:
    """Every copy of the approval message for ``request_id`` (channel and DMs), current state."""
    found = []
    for channel in (
        APPROVALS,
        slack.dm_channel(ALICE),
        slack.dm_channel(BOB),
        slack.dm_channel(MALLORY),
        slack.dm_channel(REQUESTER),
    ):
        found.extend(m for m in slack.messages(channel) if _is_request_message(m, request_id))
    return found


def approval_message(
    slack: SlackEmulator, request_id: int, channel: str = APPROVALS
) -> dict[str, Any]:
    return wait_until(
        lambda: next(
            (m for m in slack.messages(channel) if _is_request_message(m, request_id)), None
        ),
        what=f"approval message for #{request_id} in {channel}",
    )


def click(
    bot: BotProcess, slack: SlackEmulator, user: str, message: dict[str, Any], action_id: str
) -> dict[str, Any]:
    """Click a button on a message and return the bot's ephemeral answer to the clicker."""
    sent = bot.sender.click(user, message, action_id)
    assert sent.status_code == 200, sent.text
    return reply_to(slack, str(sent.response_key), timeout=30)


def credentials_message(
    slack: SlackEmulator, user: str, request_id: int, timeout: float = 30.0
) -> dict[str, Any]:
    """The credentials DM for ``request_id`` as the requester sees it now."""
    marker = f"(request #{request_id}) is ready"
    return wait_until(
        lambda: next(
            (m for m in slack.messages(slack.dm_channel(user)) if marker in str(m.get("text", ""))),
            None,
        ),
        timeout=timeout,
        what=f"credentials DM for #{request_id}",
    )


def blocks_text(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or [])


WRAP_TOKEN = re.compile(r"unwrap ([A-Za-z0-9._-]{10,})")


def unwrap_from(message: dict[str, Any], openbao: OpenBaoServer) -> dict[str, Any]:
    """Unwrap the single-use token in a credentials DM as the requester would."""
    match = WRAP_TOKEN.search(blocks_text(message))
    assert match, "no wrapping token in the credentials DM"
    # As `vault unwrap <token>` does: the wrapping token is the client token.
    client = hvac.Client(url=openbao.addr, token=match.group(1))
    data = client.sys.unwrap()
    return dict(data["data"])


def action_ids(message: dict[str, Any]) -> list[str]:
    ids = []
    for block in message.get("blocks") or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            ids.append(element.get("action_id"))
    return ids


def bot_rows(postgres: PostgresServer, bot: BotProcess, query: str) -> list[tuple[Any, ...]]:
    """Run a read-only query against the bot's own database."""
    dbname = bot.env["DATABASE_URL"].rsplit("/", 1)[-1]
    return postgres.execute(query, dbname=dbname)


def request_status(postgres: PostgresServer, bot: BotProcess, request_id: int) -> str:
    rows = bot_rows(postgres, bot, f"SELECT status FROM access_request WHERE id = {request_id}")
    assert rows, f"request {request_id} not in the database"
    return str(rows[0][0])


def audit_actions(postgres: PostgresServer, bot: BotProcess, request_id: int) -> list[str]:
    rows = bot_rows(
        postgres, bot, f"SELECT action FROM audit_event WHERE request_id = {request_id} ORDER BY id"
    )
    return [str(r[0]) for r in rows]


def database_dump(postgres: PostgresServer, bot: BotProcess) -> str:
    """Every value in every table of the bot's database, as text (for secret scans)."""
    tables = [
        r[0]
        for r in bot_rows(
            postgres, bot, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
    ]
    dump = []
    for table in tables:
        for row in bot_rows(postgres, bot, f'SELECT * FROM "{table}"'):
            dump.append(repr(row))
    return "\n".join(dump)


def assert_nowhere(
    secrets: Iterable[str],
    *,
    slack: SlackEmulator,
    bot: BotProcess,
    postgres: PostgresServer,
    allowed_channels: Iterable[str] = (),
) -> None:
    """No secret value in any Slack call (except DMs to ``allowed_channels``), log or DB row."""
    allowed = set(allowed_channels)
    logs = bot.log_text()
    dump = database_dump(postgres, bot)
    for secret in secrets:
        assert len(secret) >= 8, "a secret this short would match by accident"
        for call in slack.calls():
            if call.params.get("channel") in allowed and call.method in {
                "chat.postMessage",
                "chat.update",
            }:
                continue
            assert secret not in json.dumps(call.params, default=str), (
                f"secret leaked to Slack in {call.method} to {call.params.get('channel')}"
            )
        assert secret not in logs, "secret leaked into the bot's log"
        assert secret not in dump, "secret leaked into the bot's database"


def pg_login_and_select(postgres: PostgresServer, username: str, password: str) -> int:
    """Log in with issued credentials and count the payments rows they can read."""
    with postgres.connect_as(username, password, "payments") as conn:
        return int(conn.execute("SELECT count(*) FROM payments").fetchone()[0])


def login_fails(postgres: PostgresServer, username: str, password: str) -> bool:
    try:
        with postgres.connect_as(username, password, "payments"):
            return False
    except psycopg.OperationalError:
        return True


def lease_gone(openbao: OpenBaoServer, lease_id: str) -> bool:
    client = openbao.client()
    try:
        client.sys.read_lease(lease_id)
    except hvac.exceptions.InvalidRequest:
        return True
    return False


def posts_to(slack: SlackEmulator, channel: str) -> list[Call]:
    return [c for c in slack.calls("chat.postMessage") if c.params.get("channel") == channel]
