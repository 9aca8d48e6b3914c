"""The kill switch end to end: an admin locks a compromised account over the real slash command;
the real OpenBao confirms every credential gone, PostgreSQL refuses the logins, the pending
request is denied, the locked approver is neither asked nor heard, and the lock outlives a
restart until another admin lifts it."""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    APPROVALS,
    AUDIT,
    BOB,
    MALLORY,
    REQUESTER,
    approval_message,
    approval_messages,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    login_fails,
    pg_login_and_select,
    policy_for,
    posts_to,
    reply_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import BotProcess, OpenBaoServer, PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration

ADMIN = "U0SECADMIN"
OTHER_ADMIN = "U0SECOTHER"


def slash(bot: BotProcess, slack: SlackEmulator, user: str, text: str) -> str:
    sent = bot.sender.slash(user, text)
    assert sent.status_code == 200, sent.text
    return str(reply_to(slack, str(sent.response_key), timeout=60)["text"])


def granted(
    bot: BotProcess, slack: SlackEmulator, openbao: OpenBaoServer, postgres: PostgresServer
) -> dict[str, Any]:
    """A fresh grant for the requester, its credentials proven to work."""
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-9 suspicious")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    values = unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)
    assert pg_login_and_select(postgres, values["username"], values["password"]) == 3
    (lease_id,) = bot_rows(
        postgres, bot, f'SELECT lease_id FROM "grant" WHERE request_id = {request_id}'
    )[0]
    return {"id": request_id, "lease": lease_id, **values}


def test_lock_takes_everything_at_once_survives_a_restart_and_unlock_lifts_it(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, admins=[ADMIN, OTHER_ADMIN]))
    grants = [granted(bot, slack, openbao, postgres) for _ in range(3)]
    pending = request_access(bot, slack, REQUESTER, "payments-db 1h INC-9 more")

    # Not an admin: refused, nothing changes.
    answer = slash(bot, slack, MALLORY, f"lock <@{REQUESTER}|carol> I say so")
    assert "not an admin" in answer
    assert [request_status(postgres, bot, g["id"]) for g in grants] == ["active"] * 3
    assert bot_rows(postgres, bot, "SELECT count(*) FROM user_lock") == [(0,)]

    answer = slash(bot, slack, ADMIN, f"lock <@{REQUESTER}|carol> laptop stolen <!channel>")
    assert "3 of 3 active grant(s) revoked, Vault confirmed" in answer
    assert "1 pending request(s) denied" in answer
    for grant in grants:  # Vault and PostgreSQL agree: every credential is gone
        assert lease_gone(openbao, grant["lease"])
        assert login_fails(postgres, grant["username"], grant["password"])
        assert not postgres.role_exists(grant["username"])
        assert request_status(postgres, bot, grant["id"]) == "ended"
    assert request_status(postgres, bot, pending) == "denied"
    (locked,) = bot_rows(
        postgres, bot, "SELECT actor, details FROM audit_event WHERE action = 'locked'"
    )
    assert locked[0] == ADMIN and '"via":"slack"' in locked[1] and REQUESTER in locked[1]
    alert = next(c.params["text"] for c in posts_to(slack, AUDIT) if ":lock:" in c.params["text"])
    assert f"<@{ADMIN}> locked <@{REQUESTER}>" in alert
    assert "<!channel>" not in alert  # the reason is escaped: it pings nobody

    assert "locked your access" in slash(bot, slack, REQUESTER, "payments-db 30m INC-9 again")

    # A locked approver is neither asked nor heard.
    slash(bot, slack, OTHER_ADMIN, f"lock <@{BOB}> phished")
    asked = request_access(bot, slack, MALLORY, "payments-db 30m INC-10 checkout")
    wait_until(lambda: len(approval_messages(slack, asked)) == 2, what="two copies")
    channels = {m["channel"] for m in approval_messages(slack, asked)}
    assert channels == {APPROVALS, slack.dm_channel(ALICE)}  # not Bob's DM
    refused = click(bot, slack, BOB, approval_message(slack, asked), ActionId.APPROVE)
    assert "locked your access" in refused["text"]
    assert request_status(postgres, bot, asked) == "pending"

    # The locks outlive a restart.
    bot.restart()
    assert "locked your access" in slash(bot, slack, REQUESTER, "payments-db 30m INC-9 again")

    assert "cannot unlock yourself" in slash(bot, slack, OTHER_ADMIN, f"unlock <@{OTHER_ADMIN}>")
    assert "is unlocked" in slash(bot, slack, OTHER_ADMIN, f"unlock <@{REQUESTER}>")
    again = request_access(bot, slack, REQUESTER, "payments-db 30m INC-9 cleared")
    assert request_status(postgres, bot, again) == "pending"
    lifted = bot_rows(
        postgres, bot, "SELECT lifted_by, lifted_via FROM user_lock WHERE lifted_at IS NOT NULL"
    )
    assert lifted == [(OTHER_ADMIN, "slack")]
