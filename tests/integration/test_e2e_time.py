"""Time and faults end to end: real expiry, a crash across an expiry, failing revocation."""

from __future__ import annotations

import time

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    AUDIT,
    REQUESTER,
    approval_message,
    assert_nowhere,
    audit_actions,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    pg_login_and_select,
    policy_for,
    posts_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import (
    CREATION_STATEMENTS,
    REVOCATION_STATEMENTS,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
)

pytestmark = pytest.mark.integration


def approve_and_unwrap(
    bot, slack: SlackEmulator, openbao: OpenBaoServer, text: str
) -> tuple[int, dict]:
    request_id = request_access(bot, slack, REQUESTER, text)
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    return request_id, unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)


def lease_of(postgres: PostgresServer, bot, request_id: int) -> str:
    return str(
        bot_rows(postgres, bot, f'SELECT lease_id FROM "grant" WHERE request_id = {request_id}')[0][
            0
        ]
    )


@pytest.mark.slow
def test_one_minute_grant_expires_on_time(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id, creds = approve_and_unwrap(bot, slack, openbao, "payments-db 1m INC-10 quick look")
    issued_at = time.monotonic()
    assert pg_login_and_select(postgres, creds["username"], creds["password"]) == 3
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "ended",
        timeout=90,
        what="the grant to end",
    )
    held = time.monotonic() - issued_at
    assert 50 < held < 80, f"ended after {held:.0f}s, expected about 60s"
    assert not postgres.role_exists(creds["username"])
    assert lease_gone(openbao, lease_of(postgres, bot, request_id))
    assert audit_actions(postgres, bot, request_id)[-1] == "expired"
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "it expired" in str(c.params.get("text"))
        ),
    )
    # The audit post comes after the requester's DM (``EndGrant._mark_ended``: commit, close
    # the credentials DM, tell the requester, then announce): wait for it too.
    wait_until(
        lambda: any("expired; Vault confirmed" in c.params["text"] for c in posts_to(slack, AUDIT)),
        what="the expiry in the audit channel",
    )
    assert_nowhere([creds["password"]], slack=slack, bot=bot, postgres=postgres)


def test_grant_that_expired_while_the_bot_was_down_is_revoked_at_restart(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id, creds = approve_and_unwrap(bot, slack, openbao, "payments-db 2h INC-11 long one")
    assert postgres.role_exists(creds["username"])
    bot.kill()
    # While it is down, the grant's expiry passes (we move the recorded expiry into the past
    # rather than wait two hours; Vault's own lease is still live, so the bot must revoke it).
    dbname = bot.env["DATABASE_URL"].rsplit("/", 1)[-1]
    postgres.execute(
        f"UPDATE \"grant\" SET expires_at = now() - interval '1 minute' "
        f"WHERE request_id = {request_id}",
        dbname=dbname,
    )
    assert postgres.role_exists(creds["username"])
    bot.restart()
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "ended",
        timeout=30,
        what="the first tick to revoke the grant",
    )
    assert not postgres.role_exists(creds["username"])
    assert lease_gone(openbao, lease_of(postgres, bot, request_id))
    assert audit_actions(postgres, bot, request_id)[-1] == "expired"
    wait_until(lambda: "timers: grant expiry 1" in bot.log_text(), what="the tick's summary")


def test_future_expiry_survives_a_restart(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id, creds = approve_and_unwrap(bot, slack, openbao, "payments-db 2h INC-12 survive")
    expires_at = bot_rows(postgres, bot, 'SELECT expires_at FROM "grant"')[0][0]
    bot.kill()
    bot.restart()
    restarted = bot.log_text().rsplit("===== starting bot", 1)[-1]
    assert "timers: grant expiry" not in restarted
    assert request_status(postgres, bot, request_id) == "active"
    assert pg_login_and_select(postgres, creds["username"], creds["password"]) == 3
    # Its expiry is where it was: the column is the timer, and no job was stored for it.
    assert bot_rows(postgres, bot, 'SELECT expires_at FROM "grant"') == [(expires_at,)]
    assert bot_rows(postgres, bot, "SELECT to_regclass('apscheduler_jobs')") == [(None,)]


def test_failed_revocation_is_retried_alerted_and_never_marked_ended_early(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    root = openbao.client()
    fragile = "payments-fragile"
    root.secrets.database.create_role(
        name=fragile,
        db_name=vault_db.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=['DROP ROLE "{{name}}";'],  # fails: the role holds grants
        default_ttl="1h",
        max_ttl="24h",
        mount_point=vault_db.mount,
    )
    policy = policy_for(vault_db.path)
    policy["resources"]["payments-db"]["grant"]["path"] = f"{vault_db.mount}/creds/{fragile}"
    bot = run_bot(policy)
    request_id, creds = approve_and_unwrap(bot, slack, openbao, "payments-db 1h INC-13 fragile")
    sent = bot.sender.slash(REQUESTER, f"revoke {request_id}")
    assert sent.status_code == 200
    alert = slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == AUDIT and "REVOCATION FAILED" in str(c.params.get("text"))
        ),
        timeout=30,
    )
    assert ":rotating_light:" in alert.params["text"]
    assert request_status(postgres, bot, request_id) == "revoking"
    assert postgres.role_exists(creds["username"])
    rows = bot_rows(postgres, bot, 'SELECT status, revoke_attempts, last_error FROM "grant"')
    assert rows[0][0] == "revoking" and rows[0][1] >= 1 and "cannot be dropped" in rows[0][2]

    # The operator fixes the role; the retry (due 15 s after the first failure) succeeds.
    root.secrets.database.create_role(
        name=fragile,
        db_name=vault_db.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl="1h",
        max_ttl="24h",
        mount_point=vault_db.mount,
    )
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "ended",
        timeout=60,
        what="the retry to revoke",
    )
    assert not postgres.role_exists(creds["username"])
    actions = audit_actions(postgres, bot, request_id)
    assert "revoke_failed" in actions and actions[-1] == "revoked"
    assert_nowhere([creds["password"]], slack=slack, bot=bot, postgres=postgres)


@pytest.mark.slow
def test_credentials_never_unwrapped_are_revoked(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, wrap_ttl="1m"))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-14 never used")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    credentials = credentials_message(slack, REQUESTER, request_id)
    # The requester never unwraps. 15 s before the wrapping token would expire, the bot finds
    # it unused, revokes it and the grant: credentials nobody can collect are no access at all.
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "ended",
        timeout=75,
        what="the uncollected grant to be revoked",
    )
    actions = audit_actions(postgres, bot, request_id)
    assert actions[-2:] == ["not_collected", "revoked"]
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "not unwrapped in time" in str(c.params.get("text"))
        ),
    )
    with pytest.raises(Exception, match="wrapping token is not valid"):
        unwrap_from(credentials, openbao)  # and it cannot be unwrapped late
    lease = bot_rows(postgres, bot, 'SELECT lease_id FROM "grant"')[0][0]
    assert lease_gone(openbao, lease)
