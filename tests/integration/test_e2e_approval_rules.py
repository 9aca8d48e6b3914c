"""Approval rules end to end: two-of-N, who may ask, escalation and pending expiry driven by the
scheduler, extension against the real Vault, and break-glass."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from bot.slack.ids import ActionId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    APPROVALS,
    AUDIT,
    BOB,
    REQUESTER,
    action_ids,
    approval_message,
    audit_actions,
    blocks_text,
    bot_rows,
    click,
    credentials_message,
    pg_login_and_select,
    policy_for,
    posts_to,
    reply_to,
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

CAROL = "U0CAROL"


def with_resource(vault_path: str, **settings: object) -> dict:
    policy = policy_for(vault_path)
    policy["resources"]["payments-db"].update(settings)
    return policy


def test_two_of_three_approvals_with_duplicate_and_concurrent_clicks(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(with_resource(vault_db.path, approvers=[ALICE, BOB, CAROL], approvals_required=2))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-20 two keys")
    message = approval_message(slack, request_id)
    first = click(bot, slack, ALICE, message, ActionId.APPROVE)
    assert "still needs 1 more approval" in first["text"]
    assert request_status(postgres, bot, request_id) == "pending"
    progress = wait_until(
        lambda: "1 of 2 approvals" in blocks_text(approval_message(slack, request_id)),
        what="progress on the message",
    )
    assert progress
    again = click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    assert "already decided" in again["text"]

    answers: list[dict] = []
    message = approval_message(slack, request_id)
    threads = [
        threading.Thread(
            target=lambda u=u: answers.append(click(bot, slack, u, message, ActionId.APPROVE))
        )
        for u in (BOB, CAROL, BOB)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum("it is now" in a["text"] for a in answers) == 1, answers
    credentials_message(slack, REQUESTER, request_id)
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 1
    approvers = {r[0] for r in bot_rows(postgres, bot, "SELECT approver FROM decision")}
    assert ALICE in approvers and len(approvers) == 2
    assert audit_actions(postgres, bot, request_id).count("issued") == 1
    final = approval_message(slack, request_id)
    assert action_ids(final) == [] and "(with <@" in blocks_text(final)


def test_only_listed_requesters_may_ask(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(with_resource(vault_db.path, requesters=[REQUESTER]))
    sent = bot.sender.slash("U0MALLORY", "payments-db 30m INC-21 let me in")
    assert "not among the people who may ask" in reply_to(slack, str(sent.response_key))["text"]
    assert bot_rows(postgres, bot, "SELECT count(*) FROM access_request")[0][0] == 0
    assert request_access(bot, slack, REQUESTER, "payments-db 30m INC-21 me") == 1


def test_escalation_then_expiry_unanswered(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    policy = with_resource(
        vault_db.path,
        approvers=["first-line", "second-line"],
        escalate_after="4s",
        pending_ttl="10s",
    )
    policy["rotations"] = {
        "first-line": {
            "type": "static",
            "timezone": "UTC",
            "start": "2026-01-01",
            "shift": "weekly",
            "handoff": "00:00",
            "members": [ALICE],
        },
        "second-line": {
            "type": "static",
            "timezone": "UTC",
            "start": "2026-01-01",
            "shift": "daily",
            "handoff": "00:00",
            "members": [BOB],
        },
    }
    bot = run_bot(policy)
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-22 anyone?")
    assert [m for m in slack.messages(slack.dm_channel(ALICE)) if "#1" in m["text"]]
    assert not slack.messages(slack.dm_channel(BOB))
    # Nobody decides: after escalate_after the second line is asked, and the message says so.
    escalated = slack.wait_for(
        "chat.postMessage", lambda c: c.params.get("channel") == slack.dm_channel(BOB), timeout=15
    )
    assert "Access request #1" in escalated.params["text"]
    wait_until(
        lambda: "escalated to <@U0BOB>" in blocks_text(approval_message(slack, request_id)),
        what="the escalation note",
    )
    # Still nobody: after pending_ttl it expires, messages lose their buttons, requester told.
    wait_until(
        lambda: request_status(postgres, bot, request_id) == "expired",
        timeout=20,
        what="the request to expire",
    )
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "expired before anyone decided" in str(c.params.get("text"))
        ),
    )
    wait_until(lambda: action_ids(approval_message(slack, request_id)) == [], what="buttons gone")
    assert audit_actions(postgres, bot, request_id) == ["requested", "escalated", "request_expired"]
    late = (
        click(
            bot,
            slack,
            BOB,
            approval_message(slack, request_id, slack.dm_channel(BOB)),
            ActionId.APPROVE,
        )
        if ActionId.APPROVE
        in action_ids(approval_message(slack, request_id, slack.dm_channel(BOB)))
        else None
    )
    assert late is None
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 0


def lease_ttl(openbao: OpenBaoServer, lease_id: str) -> int:
    return int(openbao.client().sys.read_lease(lease_id)["data"]["ttl"])


def test_extension_is_approved_renewed_in_vault_and_capped_at_max_duration(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(with_resource(vault_db.path, max_duration="4h"))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 3h INC-23 long debugging")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    credentials = credentials_message(slack, REQUESTER, request_id)
    creds = unwrap_from(credentials, openbao)
    assert ActionId.EXTEND in action_ids(credentials)
    lease_id = bot_rows(postgres, bot, 'SELECT lease_id FROM "grant"')[0][0]
    assert lease_ttl(openbao, lease_id) <= 3 * 3600

    too_long = bot.sender.slash(REQUESTER, f"extend {request_id} 2h")
    assert "at most 1h more" in reply_to(slack, str(too_long.response_key))["text"]
    sent = bot.sender.slash(REQUESTER, f"extend {request_id} 30m")
    assert "Extension of #1 by 30m" in reply_to(slack, str(sent.response_key))["text"]
    extension = approval_message(slack, 2)
    assert extension["text"].startswith("Extension request #2")
    click(bot, slack, BOB, extension, ActionId.APPROVE)
    told = slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "is extended until" in str(c.params.get("text"))
        ),
        timeout=30,
    )
    assert "capped" not in told.params["text"]
    assert 3 * 3600 + 25 * 60 < lease_ttl(openbao, lease_id) <= 3 * 3600 + 30 * 60
    expires_at = bot_rows(postgres, bot, 'SELECT expires_at FROM "grant"')[0][0]
    left = (expires_at - datetime.now(UTC)).total_seconds()
    assert 3 * 3600 + 25 * 60 < left <= 3 * 3600 + 30 * 60
    assert request_status(postgres, bot, 2) == "ended"
    assert "extended" in audit_actions(postgres, bot, request_id)
    assert pg_login_and_select(postgres, creds["username"], creds["password"]) == 3
    # The new expiry is the timer itself: nothing else holds the old one.
    assert bot_rows(postgres, bot, "SELECT to_regclass('apscheduler_jobs')") == [(None,)]


def test_extension_capped_by_vault_says_so(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    root = openbao.client()
    root.secrets.database.create_role(
        name="payments-short",
        db_name=vault_db.connection,
        creation_statements=CREATION_STATEMENTS,
        revocation_statements=REVOCATION_STATEMENTS,
        default_ttl="1h",
        max_ttl="1h30m",
        mount_point=vault_db.mount,
    )
    bot = run_bot(with_resource(f"{vault_db.mount}/creds/payments-short", max_duration="4h"))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 1h INC-24 capped")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    credentials_message(slack, REQUESTER, request_id)
    sent = bot.sender.slash(REQUESTER, f"extend {request_id} 2h")
    reply_to(slack, str(sent.response_key))
    click(bot, slack, ALICE, approval_message(slack, 2), ActionId.APPROVE)
    told = slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "is extended until" in str(c.params.get("text"))
        ),
        timeout=30,
    )
    assert "Vault capped the renewal" in told.params["text"]


def test_break_glass_issues_at_once_is_announced_and_reviewed(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(with_resource(vault_db.path, break_glass={"max_duration": "30m"}))
    too_long = bot.sender.slash(REQUESTER, "payments-db 1h --break-glass INC-25 outage")
    assert "at most 30m" in reply_to(slack, str(too_long.response_key))["text"]
    sent = bot.sender.slash(REQUESTER, "payments-db 15m --break-glass INC-25 site down")
    receipt = reply_to(slack, str(sent.response_key))["text"]
    assert "break-glass" in receipt and "active" in receipt
    creds = unwrap_from(credentials_message(slack, REQUESTER, 1), openbao)
    assert pg_login_and_select(postgres, creds["username"], creds["password"]) == 3

    loud = [c for c in posts_to(slack, AUDIT) if "BREAK-GLASS" in c.params["text"]]
    assert loud and loud[0].params["text"].startswith(":rotating_light:")
    announcement = approval_message(slack, 1, APPROVALS)
    assert announcement["text"].startswith("Break-glass access #1")
    assert action_ids(announcement) == [ActionId.REVIEW]
    assert [m for m in slack.messages(slack.dm_channel(ALICE)) if "Break-glass" in m["text"]]

    refused = click(bot, slack, REQUESTER, announcement, ActionId.REVIEW)
    assert "Only an approver" in refused["text"]
    reviewed = click(bot, slack, BOB, announcement, ActionId.REVIEW)
    assert "You reviewed" in reviewed["text"]
    after = approval_message(slack, 1, APPROVALS)
    assert action_ids(after) == [] and f"reviewed by <@{BOB}>" in blocks_text(after)
    row = bot_rows(
        postgres,
        bot,
        "SELECT break_glass, reviewed_by, reviewed_at, decided_by FROM access_request WHERE id = 1",
    )[0]
    assert row[0] is True and row[1] == BOB and row[2] is not None and row[3] == REQUESTER
    assert audit_actions(postgres, bot, 1)[:3] == ["break_glass", "issued", "delivered"]
    assert audit_actions(postgres, bot, 1)[-1] == "reviewed"


def test_pagerduty_on_call_approves_and_an_outage_falls_back_to_the_user_group(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    from tests.emulators.pagerduty_api import PagerDutyEmulator

    slack.usergroups["S0SRELEADS"] = [CAROL]
    with PagerDutyEmulator() as pagerduty:
        pagerduty.add_user("PUALICE", f"{ALICE.lower()}@example.com")
        pagerduty.add_oncall("PUALICE", schedule_id="PSCHED1")
        policy = with_resource(vault_db.path, approvers=["platform", "sre-leads"])
        policy["rotations"] = {
            "platform": {"type": "pagerduty", "schedule_id": "PSCHED1"},
            "sre-leads": {"type": "usergroup", "usergroup": "S0SRELEADS"},
        }
        bot = run_bot(
            policy,
            env={"PAGERDUTY_TOKEN": pagerduty.token, "PAGERDUTY_API_URL": pagerduty.base_url},
        )
        first = request_access(bot, slack, REQUESTER, "payments-db 30m INC-26 via pagerduty")
        assert [m for m in slack.messages(slack.dm_channel(ALICE)) if f"#{first}" in m["text"]]
        assert not slack.messages(slack.dm_channel(CAROL))
        # A bystander, on call nowhere, may not approve.
        refused = click(bot, slack, "U0MALLORY", approval_message(slack, first), ActionId.APPROVE)
        assert "Only the approvers" in refused["text"]
        click(bot, slack, ALICE, approval_message(slack, first), ActionId.APPROVE)
        credentials_message(slack, REQUESTER, first)

        pagerduty.outage = True
        bot.restart()  # a fresh process: no cached on-call answer
        second = request_access(bot, slack, REQUESTER, "payments-db 30m INC-27 pd is down")
        message = approval_message(slack, second)
        assert "PagerDuty unreachable" in blocks_text(message)
        assert "fell back to the next source (sre-leads)" in blocks_text(message)
        assert [m for m in slack.messages(slack.dm_channel(CAROL)) if f"#{second}" in m["text"]]
        click(bot, slack, CAROL, message, ActionId.APPROVE)
        credentials_message(slack, REQUESTER, second)
        routing = bot_rows(
            postgres, bot, f"SELECT routing_note FROM access_request WHERE id = {second}"
        )[0][0]
        assert "PagerDuty unreachable" in routing
