"""When Slack is down: `debug-access approve|deny|revoke|requests --as ADMIN` end to end.

The real bot process (its timers running), real OpenBao and PostgreSQL, the Slack emulator; the
command line runs as a subprocess with the bot's own environment, as an operator would run it
in the bot's container. Slack is made to refuse every call to show that what the command line
did stands in the database and Vault, and that the running bot tells Slack once it answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    AUDIT,
    BOB,
    REQUESTER,
    action_ids,
    approval_message,
    approval_messages,
    audit_actions,
    blocks_text,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    login_fails,
    pg_login_and_select,
    policy_for,
    posts_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import BotProcess, OpenBaoServer, PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration

#: An admin who approves nothing: may revoke from the command line, may not approve.
SECURITY = "U0SECURITY"
#: ALICE is an admin and an approver; BOB is an approver, not an admin.
ADMINS = [ALICE, SECURITY]
#: Slack refusing at once (no Retry-After to wait for): 500s and errors in 200 answers.
REFUSALS = ((500, "internal_error"), (200, "fatal_error"))


def cli(bot: BotProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bot ARGS`` with the bot's environment, from its working directory."""
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=bot.env,
        cwd=bot.workdir,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def events(postgres: PostgresServer, bot: BotProcess, request_id: int) -> list[tuple[Any, ...]]:
    rows = bot_rows(
        postgres,
        bot,
        f"SELECT action, actor, details FROM audit_event WHERE request_id = {request_id} "
        "ORDER BY id",
    )
    return [(action, actor, json.loads(details)) for action, actor, details in rows]


def lease_of(postgres: PostgresServer, bot: BotProcess, request_id: int) -> str:
    rows = bot_rows(postgres, bot, f'SELECT lease_id FROM "grant" WHERE request_id = {request_id}')
    assert rows and rows[0][0]
    return str(rows[0][0])


def dms(slack: SlackEmulator, user: str) -> list[str]:
    """Plain DMs Slack took for ``user``."""
    return [
        str(c.params.get("text"))
        for c in slack.calls("chat.postMessage")
        if c.response is not None
        and c.response.get("ok")
        and c.params.get("channel") == slack.dm_channel(user)
    ]


def audit_posts(slack: SlackEmulator) -> list[str]:
    return [
        str(c.params.get("text"))
        for c in posts_to(slack, AUDIT)
        if c.response is not None and c.response.get("ok")
    ]


def test_approve_from_the_cli_delivers_by_dm_then_revoke_ends_it_in_vault(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, admins=ADMINS))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-7 db on fire")
    # Slack input is cleaned of control characters; a row written otherwise (an older release,
    # a hand edit) must still print on one line and move no cursor.
    bot_rows(
        postgres,
        bot,
        "UPDATE access_request SET reason = reason || chr(10) || '#99  active  U0X' || chr(27) "
        f"|| '[2J' WHERE id = {request_id}",
    )

    listed = cli(bot, "requests", "--as", ALICE)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 and "\x1b" not in listed.stdout
    line = listed.stdout.splitlines()[0]
    assert line.startswith(f"#{request_id}  pending  {REQUESTER}  payments-db  asks 30m")
    assert line.endswith('reason: "INC-7 db on fire\\n#99  active  U0X\\x1b[2J"'), line
    as_json = json.loads(cli(bot, "requests", "--json", "--as", ALICE).stdout)
    assert [r["id"] for r in as_json] == [request_id] and as_json[0]["status"] == "pending"

    approved = cli(bot, "approve", str(request_id), "--as", ALICE)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "credentials issued and delivered" in approved.stdout

    # Credentials went only to the requester, by Slack DM, and they work.
    credentials = credentials_message(slack, REQUESTER, request_id)
    values = unwrap_from(credentials, openbao)
    username, password = values["username"], values["password"]
    assert pg_login_and_select(postgres, username, password) == 3
    assert password not in approved.stdout + approved.stderr
    assert request_status(postgres, bot, request_id) == "active"
    (approval,) = [e for e in events(postgres, bot, request_id) if e[0] == "approved"]
    assert approval[1] == ALICE and approval[2]["via"] == "cli"
    assert any(f"approved by <@{ALICE}> via CLI" in t for t in audit_posts(slack))
    for copy in approval_messages(slack, request_id):
        assert action_ids(copy) == [] and f"Approved by <@{ALICE}>" in blocks_text(copy)

    # An admin who approves nothing may still end it; Vault confirms.
    lease_id = lease_of(postgres, bot, request_id)
    revoked = cli(bot, "revoke", str(request_id), "--as", SECURITY)
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert "Vault confirmed" in revoked.stdout
    assert lease_gone(openbao, lease_id) and login_fails(postgres, username, password)
    assert request_status(postgres, bot, request_id) == "ended"
    (revocation,) = [e for e in events(postgres, bot, request_id) if e[0] == "revoked"]
    assert revocation[1] == SECURITY and revocation[2]["via"] == "cli"
    wait_until(
        lambda: any(f"revoked early by <@{SECURITY}> via CLI" in t for t in audit_posts(slack)),
        what="the revocation in the audit channel",
    )
    assert any(f"<@{SECURITY}> revoked it" in t for t in dms(slack, REQUESTER))


def test_who_is_not_allowed_is_refused_in_one_line_and_nothing_changes(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, admins=ADMINS))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-8 look around")
    before = audit_actions(postgres, bot, request_id)
    posts_before = len(slack.calls("chat.postMessage")) + len(slack.calls("chat.update"))
    for args, says in (
        (("approve", str(request_id), "--as", BOB), "not an admin"),  # approver, not admin
        (("deny", str(request_id), "--as", SECURITY), "Only the approvers"),  # admin only
        (("approve", str(request_id), "--as", REQUESTER), "not an admin"),
        (("revoke", str(request_id), "--as", SECURITY), "use Deny"),  # still waiting
        (("requests", "--as", BOB), "not an admin"),
    ):
        result = cli(bot, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert result.stdout == ""
    assert request_status(postgres, bot, request_id) == "pending"
    assert audit_actions(postgres, bot, request_id) == before
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 0
    assert bot_rows(postgres, bot, "SELECT count(*) FROM notice")[0][0] == 0
    assert len(slack.calls("chat.postMessage")) + len(slack.calls("chat.update")) == posts_before


def test_deny_and_revoke_while_slack_refuses_and_the_bot_tells_slack_when_it_is_back(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, admins=ADMINS), env={"TIMER_TICK_SECONDS": "1"})
    waiting = request_access(bot, slack, REQUESTER, "payments-db 30m INC-9 to be denied")
    active = request_access(bot, slack, REQUESTER, "payments-db 30m INC-9 to be revoked")
    click(bot, slack, BOB, approval_message(slack, active), ActionId.APPROVE)
    credentials = credentials_message(slack, REQUESTER, active)
    assert ActionId.REVOKE in action_ids(credentials)
    wait_until(lambda: request_status(postgres, bot, active) == "active", what="active")
    lease_id = lease_of(postgres, bot, active)

    slack.outage(300, methods=None, answers=REFUSALS)
    told_before = len(dms(slack, REQUESTER))
    denied = cli(bot, "deny", str(waiting), "--as", ALICE)
    revoked = cli(bot, "revoke", str(active), "--as", SECURITY)
    unsent = bot_rows(
        postgres, bot, "SELECT kind, request_id FROM notice WHERE sent_at IS NULL ORDER BY id"
    )
    # Slack answers again (soon: the bot's retries of a refused notice back off, 5 s, 10 s, 30 s)
    slack.outage(0)

    # What Slack refused was queued, nothing of it sent meanwhile.
    assert Counter(unsent) == Counter(
        {("refresh", waiting): 1, ("audit", waiting): 1, ("refresh", active): 1}
        | {("audit", active): 1, ("dm", None): 2}
    )
    # The facts stood without Slack: denied, revoked in Vault, audited via cli.
    assert denied.returncode == 0, denied.stdout + denied.stderr
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    for result in (denied, revoked):
        assert "Slack did not answer" in result.stderr and "queued" in result.stderr
    assert request_status(postgres, bot, waiting) == "denied"
    assert request_status(postgres, bot, active) == "ended" and lease_gone(openbao, lease_id)
    assert [e[2].get("via") for e in events(postgres, bot, waiting) if e[0] == "denied"] == ["cli"]

    # The running bot tells Slack everything.
    wait_until(
        lambda: (
            bot_rows(postgres, bot, "SELECT count(*) FROM notice WHERE sent_at IS NULL")[0][0] == 0
        ),
        timeout=45,
        what="every queued notice sent by the bot",
    )
    told = dms(slack, REQUESTER)[told_before:]
    assert any(f"<@{ALICE}> denied your access request" in t for t in told), told
    assert any(f"(request #{active}) has ended: <@{SECURITY}> revoked it" in t for t in told), told
    posts = audit_posts(slack)
    assert any(f"denied by <@{ALICE}> via CLI" in t for t in posts), posts
    assert any(f"revoked early by <@{SECURITY}> via CLI" in t for t in posts), posts
    copies = approval_messages(slack, waiting)
    assert copies and all(
        action_ids(c) == [] and f"Denied by <@{ALICE}>" in blocks_text(c) for c in copies
    )
    closed = slack.message(credentials["channel"], credentials["ts"])
    assert f"(request #{active}) has ended" in str(closed.get("text")), closed
    assert action_ids(closed) == []


def test_approve_while_slack_refuses_the_dm_revokes_and_says_so(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    """Credentials go only by DM: when Slack refuses it for the whole delivery window (30 s),
    the grant is revoked, Vault confirming, and the command line says so and exits 1."""
    bot = run_bot(policy_for(vault_db.path, admins=ADMINS), env={"TIMER_TICK_SECONDS": "1"})
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-10 slack is out")
    slack.outage(300, methods=None, answers=REFUSALS)
    approved = cli(bot, "approve", str(request_id), "--as", ALICE)
    assert approved.returncode == 1, approved.stdout + approved.stderr
    assert "but it failed" in approved.stdout
    assert "Vault confirmed the grant is revoked" in approved.stdout
    assert "issued and delivered" not in approved.stdout
    assert request_status(postgres, bot, request_id) == "failed"
    lease_id = lease_of(postgres, bot, request_id)
    assert lease_gone(openbao, lease_id)
    (approval,) = [e for e in events(postgres, bot, request_id) if e[0] == "approved"]
    assert approval[2]["via"] == "cli"

    slack.outage(0)
    told = wait_until(
        lambda: [t for t in dms(slack, REQUESTER) if f"(request #{request_id}) could not" in t],
        timeout=45,
        what="the requester told once Slack answers",
    )
    assert "revoked (Vault confirmed it)" in told[0]
    assert not [m for m in slack.messages(slack.dm_channel(REQUESTER)) if "is ready" in str(m)]


def test_lock_and_unlock_from_the_cli_while_slack_refuses(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    """The kill switch when Slack is down: the command line revokes everything (Vault
    confirming) and refuses anything new; the audit channel hears of it once Slack is back."""
    bot = run_bot(policy_for(vault_db.path, admins=ADMINS), env={"TIMER_TICK_SECONDS": "1"})
    granted = request_access(bot, slack, REQUESTER, "payments-db 30m INC-11 compromised?")
    click(bot, slack, BOB, approval_message(slack, granted), ActionId.APPROVE)
    values = unwrap_from(credentials_message(slack, REQUESTER, granted), openbao)
    wait_until(lambda: request_status(postgres, bot, granted) == "active", what="active")
    lease_id = lease_of(postgres, bot, granted)

    refused = cli(bot, "lock", REQUESTER, "not", "an", "admin", "--as", BOB)
    assert refused.returncode == 2 and "not an admin" in refused.stderr
    assert request_status(postgres, bot, granted) == "active"

    slack.outage(300, methods=None, answers=REFUSALS)
    locked = cli(bot, "lock", REQUESTER, "token", "in", "a", "pastebin", "--as", SECURITY)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    assert "1 of 1 active grant(s) revoked, Vault confirmed" in locked.stdout
    assert lease_gone(openbao, lease_id)
    assert login_fails(postgres, values["username"], values["password"])
    assert request_status(postgres, bot, granted) == "ended"
    (event,) = bot_rows(
        postgres, bot, "SELECT actor, details FROM audit_event WHERE action = 'locked'"
    )
    assert event[0] == SECURITY and json.loads(event[1])["via"] == "cli"
    assert "Slack did not answer" in locked.stderr
    slack.outage(0)
    wait_until(
        lambda: any(
            f"<@{SECURITY}> locked <@{REQUESTER}> via CLI" in t for t in audit_posts(slack)
        ),
        timeout=45,
        what="the lock announced once Slack answers",
    )
    answer = bot.sender.slash(REQUESTER, "payments-db 30m INC-11 again")
    assert answer.status_code == 200
    assert "locked your access" in str(
        slack.wait_for("response_url", lambda c: c.params.get("key") == answer.response_key).params
    )

    unlocked = cli(bot, "unlock", REQUESTER, "--as", SECURITY)
    assert unlocked.returncode == 0 and "is unlocked" in unlocked.stdout
    assert (
        request_status(
            postgres, bot, request_access(bot, slack, REQUESTER, "payments-db 30m INC-11 ok")
        )
        == "pending"
    )
