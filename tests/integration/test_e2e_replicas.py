"""Two replicas on one PostgreSQL: every grant ends exactly once, and a replica that dies takes
none of the timers with it (issue 9).

Two real bot processes share one database, one OpenBao and one Slack. Grants are issued for
two hours, so Vault would keep every lease live that long; the test then moves the recorded
expiry to a few seconds from now, as the last release's downtime test does: the database is
where the timers read due times, so that is all it takes for the grants to fall due. A lease
found gone can only be the bot's revocation.
"""

from __future__ import annotations

import time

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    REQUESTER,
    approval_message,
    audit_actions,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    policy_for,
    request_access,
    request_status,
    wait_until,
)
from tests.integration.services import BotProcess, OpenBaoServer, PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration


def grant(bot: BotProcess, slack: SlackEmulator, number: int) -> int:
    request_id = request_access(bot, slack, REQUESTER, f"payments-db 2h INC-9{number:02d} replicas")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, request_id)
    return request_id


def expire_in(postgres: PostgresServer, bot: BotProcess, request_ids: list[int], secs: int) -> None:
    """Move the grants' recorded expiry to ``secs`` seconds from now (all the same instant)."""
    dbname = bot.env["DATABASE_URL"].rsplit("/", 1)[-1]
    postgres.execute(
        f"UPDATE \"grant\" SET expires_at = now() + interval '{secs} seconds' "
        f"WHERE request_id IN ({', '.join(map(str, request_ids))})",
        dbname=dbname,
    )


def assert_ended_once(
    postgres: PostgresServer, openbao: OpenBaoServer, bot: BotProcess, request_ids: list[int]
) -> None:
    for request_id in request_ids:
        actions = audit_actions(postgres, bot, request_id)
        assert actions.count("expired") == 1, (request_id, actions)
        assert actions[-1] == "expired" and "revoke_failed" not in actions
        lease = bot_rows(
            postgres, bot, f'SELECT lease_id FROM "grant" WHERE request_id = {request_id}'
        )
        assert lease_gone(openbao, str(lease[0][0]))


def test_two_replicas_end_each_grant_once_and_the_survivor_carries_on(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    policy = policy_for(vault_db.path)
    a, b = run_bot(policy), run_bot(policy)

    # Both replicas run; four grants fall due at the same instant, for both ticks at once.
    both = [grant(bot, slack, n) for n, bot in enumerate((a, b, a, b))]
    expire_in(postgres, a, both, 2)
    started = time.monotonic()
    wait_until(
        lambda: all(request_status(postgres, a, r) == "ended" for r in both),
        timeout=20,
        what="both replicas to end the first grants",
    )
    print(f"four grants due together ended {time.monotonic() - started - 2:.1f}s after expiry")
    assert_ended_once(postgres, openbao, a, both)

    # Grants issued while both run; then one replica dies (SIGKILL, nothing held: none is due).
    survivors = [grant(bot, slack, 10 + n) for n, bot in enumerate((a, b, a))]
    a.kill()
    killed_log = a.log_text()
    expire_in(postgres, b, survivors, 2)
    started = time.monotonic()
    wait_until(
        lambda: all(request_status(postgres, b, r) == "ended" for r in survivors),
        timeout=20,
        what="the surviving replica to end the grants",
    )
    print(f"the survivor ended three grants {time.monotonic() - started - 2:.1f}s after expiry")
    assert_ended_once(postgres, openbao, b, survivors)
    assert a.log_text() == killed_log  # the dead replica did none of it

    # And it keeps going: a grant issued after the kill ends too.
    later = grant(b, slack, 20)
    expire_in(postgres, b, [later], 1)
    wait_until(lambda: request_status(postgres, b, later) == "ended", timeout=15, what="later")
    assert_ended_once(postgres, openbao, b, [later])

    for bot in (a, b):
        assert "JobLookupError" not in bot.log_text()
        assert "Traceback" not in bot.log_text()
    # No job per grant anywhere: the bot never made APScheduler's job table.
    assert bot_rows(postgres, b, "SELECT to_regclass('apscheduler_jobs')") == [(None,)]
