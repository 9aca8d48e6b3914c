"""PostgreSQL stops and starts again under a running bot: the requester hears "try again in a
minute" while it is down, and afterwards new requests and approvals work and timers fire,
without restarting the bot.

The bot's own database lives in a cluster this test owns (the session's shared cluster serves
every other test, and Vault's database engine, and must stay up). It is stopped with
``pg_ctl stop -m fast`` (clients are disconnected, as in a restart or a fail-over) or
``-m immediate`` (a crash: no shutdown checkpoint, recovery at start) and started again on the
same port. Vault's database role caps the first grant at 15 s, so it expires while
the database is down: its timer must still end it once the database is back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.slack.ids import ActionId, BlockId, InputId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    REQUEST_ID,
    REQUESTER,
    ack_text,
    approval_message,
    click,
    credentials_message,
    policy_for,
    reply_to,
    request_access,
    wait_until,
)
from tests.integration.services import (
    CREATION_STATEMENTS,
    REVOCATION_STATEMENTS,
    BotProcess,
    OpenBaoServer,
    PostgresServer,
    VaultDatabase,
)

pytestmark = pytest.mark.integration

BRIEF_ROLE = "payments-brief"
BRIEF_TTL = 15  # seconds: Vault caps every grant of this role at this
TRY_AGAIN = "try again in a minute"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own, for the bot's state: it will be stopped and restarted."""
    server = PostgresServer()
    try:
        server.start()
        # The fixture clusters trade durability for speed (synchronous_commit = off): a crash
        # (-m immediate) then loses the last commits, which was measured here as a request that
        # vanished. Production runs with PostgreSQL's default, on; so does this cluster.
        server.execute("ALTER SYSTEM SET synchronous_commit = on")
        server.execute("SELECT pg_reload_conf()")
        server.create_database("bot")
        yield server
    finally:
        server.stop()


def brief_role(openbao: OpenBaoServer, vault_db: VaultDatabase) -> str:
    openbao.client().secrets.database.create_role(
        name=BRIEF_ROLE,
        db_name=vault_db.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl=f"{BRIEF_TTL}s",
        max_ttl=f"{BRIEF_TTL}s",
        mount_point=vault_db.mount,
    )
    return f"{vault_db.mount}/creds/{BRIEF_ROLE}"


def answer_to_slash(bot: BotProcess, slack: SlackEmulator, text: str) -> tuple[str, float]:
    """Send a slash command; return the first thing the requester sees (the ack's text, else
    the response_url message) and how long it took."""
    start = time.monotonic()
    sent = bot.sender.slash(REQUESTER, text)
    assert sent.status_code == 200, sent.text
    immediate = ack_text(sent)
    if immediate:
        return immediate, time.monotonic() - start
    reply = reply_to(slack, str(sent.response_key), timeout=20)
    assert reply.get("response_type", "ephemeral") == "ephemeral"
    return str(reply.get("text")), time.monotonic() - start


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_under_a_running_bot(
    mode: str,
    run_bot: Any,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    vault_db: VaultDatabase,
    own_postgres: PostgresServer,
) -> None:
    bot = run_bot(
        policy_for(brief_role(openbao, vault_db)),
        env={"DATABASE_URL": own_postgres.sqlalchemy_url("bot")},
    )

    def state(query: str) -> list[tuple[Any, ...]]:
        return own_postgres.execute(query, dbname="bot")

    # Before: a grant that Vault caps at 15 s, and a request waiting for its approver.
    expiring = request_access(bot, slack, REQUESTER, "payments-db 30m INC-90 before the outage")
    click(bot, slack, ALICE, approval_message(slack, expiring), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, expiring)
    waiting = request_access(bot, slack, REQUESTER, "payments-db 30m INC-90 waiting")
    waiting_message = approval_message(slack, waiting)
    slack.wait_for("views.publish", timeout=10)  # let the Home refreshes settle
    sent = bot.sender.slash(REQUESTER, "", channel_id="C0TEAM")
    form = slack.wait_for("views.open", lambda c: c.params["trigger_id"] == sent.trigger_id)

    # During: every surface answers "try again in a minute", and nothing is stored.
    own_postgres.halt(mode)
    down_at = time.monotonic()
    text, took = answer_to_slash(bot, slack, "payments-db 30m INC-91 during the outage")
    assert TRY_AGAIN in text, text
    assert took < 8, f"the requester heard back after {took:.1f}s"
    slash_answer_s = took

    clicked = bot.sender.click(ALICE, waiting_message, ActionId.APPROVE)
    answer = reply_to(slack, str(clicked.response_key), timeout=20)
    assert TRY_AGAIN in answer["text"] and answer["response_type"] == "ephemeral"

    values = {
        BlockId.RESOURCE: {InputId.RESOURCE: bot.sender.selected("payments-db")},
        BlockId.DURATION: {InputId.DURATION: "30m"},
        BlockId.REASON: {InputId.REASON: "INC-92 the form during the outage"},
    }
    submitted = bot.sender.submit_view(REQUESTER, form.params["view"], values)
    assert submitted.status_code == 200
    told = slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and TRY_AGAIN in str(c.params.get("text"))
        ),
        timeout=20,
    )
    assert told

    # Stay down until the capped grant has expired (Vault ends the lease by itself).
    expired_by = down_at + BRIEF_TTL + 2
    while time.monotonic() < expired_by:
        assert bot.sender.get("/readyz").status_code == 503
        time.sleep(0.5)
    assert bot.is_running()

    # After: the same bot process, no restart.
    own_postgres.resume()
    up_at = time.monotonic()
    first_ok = None
    while first_ok is None:
        text, _ = answer_to_slash(bot, slack, "payments-db 30m INC-93 after the outage")
        match = REQUEST_ID.search(text)
        if match:
            first_ok = int(match.group(1))
            break
        assert TRY_AGAIN in text, text
        assert time.monotonic() - up_at < 30, "no request went through 30 s after the restart"
        time.sleep(0.2)
    recovery_s = time.monotonic() - up_at
    print(
        f"\n[{mode}] slash answered in {slash_answer_s:.2f}s while PostgreSQL was down; "
        f"first request stored {recovery_s:.2f}s after PostgreSQL was back"
    )
    assert recovery_s < 10

    # Nothing from the outage was stored half-way: the waiting request is still waiting.
    reasons = [r[0] for r in state("SELECT reason FROM access_request ORDER BY id")]
    assert reasons == [
        "INC-90 before the outage",
        "INC-90 waiting",
        "INC-93 after the outage",
    ], reasons
    assert state(f"SELECT status FROM access_request WHERE id = {waiting}") == [("pending",)]

    # A new approval goes all the way to a delivered credential.
    click(bot, slack, ALICE, approval_message(slack, first_ok), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, first_ok)
    # The DM goes out first; the grant turns active in the commit right after it.
    wait_until(
        lambda: state(f"SELECT status FROM access_request WHERE id = {first_ok}") == [("active",)],
        timeout=10,
    )

    # The grant that expired during the outage is ended by its timer, without a restart.
    wait_until(
        lambda: state(f"SELECT status FROM access_request WHERE id = {expiring}") == [("ended",)],
        timeout=30,
        what="the grant that expired during the outage to end",
    )
    print(f"the grant that expired during the outage ended {time.monotonic() - up_at:.1f}s after")
    actions = [r[0] for r in state(f"SELECT action FROM audit_event WHERE request_id = {expiring}")]
    assert actions[-1] == "expired", actions
