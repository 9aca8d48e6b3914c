"""The bot's own Vault token over minutes, end to end: the real bot process, real OpenBao and
PostgreSQL, tokens that would die within seconds unless the bot renews or replaces them.

One test runs both bots at once, so their minutes are waited once:
* bot P logs in with a periodic token of 20 s and works for more than 2 minutes;
* bot A logs in with AppRole, tokens of 30 s (max 60 s), and issues and revokes for more than
  3 minutes, while a 1-minute grant expires and a 2-minute grant outlives the bot token that
  created it (grants are orphans).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    APPROVALS,
    AUDIT,
    approval_message,
    audit_actions,
    click,
    credentials_message,
    pg_login_and_select,
    policy_for,
    reply_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import (
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
    admin_policy,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "e2e-bot-admin"
REQUESTER_P = "U0REQPERIODIC"
REQUESTER_A = "U0REQAPPROLE"


def grant_flow(
    bot: BotProcess,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    user: str,
    text: str,
    approvals: str,
) -> tuple[int, dict[str, Any]]:
    request_id = request_access(bot, slack, user, text)
    click(bot, slack, ALICE, approval_message(slack, request_id, approvals), ActionId.APPROVE)
    return request_id, unwrap_from(credentials_message(slack, user, request_id), openbao)


def revoke_now(bot: BotProcess, slack: SlackEmulator, user: str, request_id: int) -> None:
    sent = bot.sender.slash(user, f"revoke {request_id}")
    assert sent.status_code == 200, sent.text
    reply_to(slack, str(sent.response_key))


def policy(vault_path: str, approvals: str, audit: str) -> dict[str, Any]:
    return policy_for(vault_path, channels={"approvals": approvals, "audit": audit})


def test_short_lived_bot_tokens_keep_working_for_minutes(
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    root = openbao.client()
    admin_policy(root, ADMIN)
    periodic = root.auth.token.create(policies=[ADMIN], period="20s", no_parent=True)["auth"][
        "client_token"
    ]
    mount = f"approle-e2e-{secrets.token_hex(3)}"
    root.sys.enable_auth_method("approle", path=mount)
    root.auth.approle.create_or_update_approle(
        "bot", token_policies=[ADMIN], token_ttl="30s", token_max_ttl="60s", mount_point=mount
    )
    role_id = root.auth.approle.read_role_id("bot", mount_point=mount)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id("bot", mount_point=mount)["data"]["secret_id"]
    second_db = f"bot_approle_{secrets.token_hex(4)}"
    postgres.create_database(second_db)

    started = time.monotonic()
    bot_p = run_bot(policy(vault_db.path, APPROVALS, AUDIT), env={"VAULT_TOKEN": periodic})
    bot_a = run_bot(
        policy(vault_db.path, "C0APPROVALS2", "C0AUDIT2"),
        env={
            "VAULT_AUTH_METHOD": "approle",
            "VAULT_ROLE_ID": role_id,
            "VAULT_SECRET_ID": secret_id,
            "VAULT_AUTH_MOUNT": mount,
            "DATABASE_URL": postgres.sqlalchemy_url(second_db),
        },
    )

    one_minute, creds_1m = grant_flow(
        bot_a,
        slack,
        openbao,
        REQUESTER_A,
        "payments-db 1m INC-1 expires in between",
        "C0APPROVALS2",
    )
    two_minutes, creds_2m = grant_flow(
        bot_a,
        slack,
        openbao,
        REQUESTER_A,
        "payments-db 2m INC-2 outlives the bot token",
        "C0APPROVALS2",
    )

    # The 1-minute grant ends on time although every bot token lives at most 60 s.
    wait_until(
        lambda: request_status(postgres, bot_a, one_minute) == "ended",
        timeout=100,
        what="the 1-minute grant to end",
    )
    assert not postgres.role_exists(creds_1m["username"])
    assert audit_actions(postgres, bot_a, one_minute)[-1] == "expired"
    # The 2-minute grant's token was created by a bot token that has died by now (max TTL
    # 60 s): it still works, because grant tokens are orphans.
    wait_until(lambda: time.monotonic() - started > 75, timeout=90)
    assert pg_login_and_select(postgres, creds_2m["username"], creds_2m["password"]) == 3

    # Bot P, two minutes in: its 20 s periodic token is alive, and a full cycle works.
    wait_until(lambda: time.monotonic() - started > 125, timeout=130)
    assert root.auth.token.lookup(periodic)["data"]["ttl"] > 0
    request_p, creds_p = grant_flow(
        bot_p, slack, openbao, REQUESTER_P, "payments-db 30m INC-3 still working", APPROVALS
    )
    assert pg_login_and_select(postgres, creds_p["username"], creds_p["password"]) == 3
    revoke_now(bot_p, slack, REQUESTER_P, request_p)
    wait_until(lambda: request_status(postgres, bot_p, request_p) == "ended", timeout=30)
    assert not postgres.role_exists(creds_p["username"])

    # Bot A, three minutes in: the 2-minute grant expired on time, and a full cycle works.
    wait_until(
        lambda: request_status(postgres, bot_a, two_minutes) == "ended",
        timeout=60,
        what="the 2-minute grant to end",
    )
    assert not postgres.role_exists(creds_2m["username"])
    wait_until(lambda: time.monotonic() - started > 185, timeout=190)
    request_a, creds_a = grant_flow(
        bot_a, slack, openbao, REQUESTER_A, "payments-db 30m INC-4 three minutes in", "C0APPROVALS2"
    )
    revoke_now(bot_a, slack, REQUESTER_A, request_a)
    wait_until(lambda: request_status(postgres, bot_a, request_a) == "ended", timeout=30)
    assert not postgres.role_exists(creds_a["username"])

    log_a = bot_a.log_text()
    assert log_a.count("logging in again") >= 2, "AppRole tokens were not replaced"
    assert "permission denied" not in log_a
    assert secret_id not in log_a and periodic not in bot_p.log_text()
    for bot in (bot_p, bot_a):
        assert bot.sender.get("/readyz").status_code == 200
