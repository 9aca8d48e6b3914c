"""SIGTERM is a graceful stop: readiness turns false, new requests are answered "try again" at
once, the approval in flight is issued *and delivered*, and the process exits 0.

The slow step is Slack: the emulator holds the credentials DM for a few seconds, and SIGTERM
arrives while it is held, between "issued" and "delivered".
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    REQUESTER,
    ack_text,
    approval_message,
    audit_actions,
    bot_rows,
    credentials_message,
    policy_for,
    reply_to,
    request_access,
    request_status,
    wait_until,
)
from tests.integration.services import PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration

HELD = 4.0  # seconds the emulator holds the credentials DM


def test_sigterm_finishes_the_approval_in_flight_and_exits_0(
    run_bot: Any,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-70 before a deploy")
    message = approval_message(slack, request_id)
    dm = slack.dm_channel(REQUESTER)
    slack.delay_next(
        "chat.postMessage",
        HELD,
        when=lambda p: p.get("channel") == dm and "is ready" in str(p.get("text")),
    )
    clicked = bot.sender.click(ALICE, message, ActionId.APPROVE)
    assert clicked.status_code == 200
    wait_until(lambda: slack.delayed, timeout=20, what="the credentials DM to be on its way")

    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    # Draining: not ready, and a new request is answered at once instead of started.
    status = wait_until(
        lambda: (lambda s: s if s == 503 else None)(bot.sender.get("/readyz").status_code),
        timeout=3,
        what="/readyz to answer 503",
    )
    assert status == 503
    started = time.monotonic()
    sent = bot.sender.slash(REQUESTER, "payments-db 30m INC-71 during the stop")
    answered = time.monotonic() - started
    assert sent.status_code == 200
    assert "try again in a minute" in ack_text(sent), sent.text
    assert answered < 1.0, f"a request during the stop was answered after {answered:.2f}s"

    code = bot.proc.wait(timeout=30)
    stopped = time.monotonic() - signalled
    print(f"\nexit {code} {stopped:.1f}s after SIGTERM (DM held {HELD:.0f}s)")
    assert code == 0, bot.log_text()[-3000:]

    # The approval in flight finished: delivered, announced, consistent.
    credentials_message(slack, REQUESTER, request_id, timeout=1)
    answer = reply_to(slack, str(clicked.response_key), timeout=1)
    assert "approved" in answer["text"]
    assert request_status(postgres, bot, request_id) == "active"
    assert audit_actions(postgres, bot, request_id)[-2:] == ["issued", "delivered"]
    stored = bot_rows(postgres, bot, "SELECT count(*) FROM access_request")[0][0]
    assert stored == 1, "the request sent during the stop was stored"

    # And the next start carries on: the grant's timer is rebuilt from the database.
    bot.start()
    assert bot.sender.get("/readyz").status_code == 200
    assert request_status(postgres, bot, request_id) == "active"
