"""The core loop end to end: request -> approve -> credentials work -> revoke -> gone.

The real bot process, real OpenBao with the database secrets engine, real PostgreSQL; Slack is
the emulator, and every request to the bot is signed exactly as Slack signs it.
"""

from __future__ import annotations

import threading

import hvac
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    approval_messages,
    assert_nowhere,
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
    reply_to,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import OpenBaoServer, PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration


def grant_refs(postgres: PostgresServer, bot, request_id: int) -> tuple[str, str, str]:
    rows = bot_rows(
        postgres,
        bot,
        f'SELECT lease_id, token_accessor, status FROM "grant" WHERE request_id = {request_id}',
    )
    assert len(rows) == 1
    return rows[0]


def test_request_approve_use_and_revoke_now(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))

    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-4211 checkout errors")
    assert request_status(postgres, bot, request_id) == "pending"

    # The approvers get it in the approvals channel and by DM, with both buttons.
    copies = wait_until(
        lambda: (
            len(approval_messages(slack, request_id)) == 3 and approval_messages(slack, request_id)
        ),
        what="three copies",
    )
    channels = {m["channel"] for m in copies}
    assert channels == {APPROVALS, slack.dm_channel(ALICE), slack.dm_channel(BOB)}
    for copy in copies:
        assert action_ids(copy) == [ActionId.APPROVE, ActionId.DENY]
        text = blocks_text(copy)
        assert f"<@{REQUESTER}>" in text and "payments-db" in text and "30m" in text
        assert "INC-4211 checkout errors" in text

    answer = click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    assert answer["response_type"] == "ephemeral" and "approved" in answer["text"]

    credentials = credentials_message(slack, REQUESTER, request_id)
    assert credentials["channel"] == slack.dm_channel(REQUESTER)
    assert ActionId.REVOKE in action_ids(credentials)
    values = unwrap_from(credentials, openbao)
    username, password = values["username"], values["password"]
    assert pg_login_and_select(postgres, username, password) == 3
    assert postgres.role_exists(username)

    # Every copy of the request now says who approved, without buttons (updated just after
    # the DM, which goes first).
    def approved_copies() -> bool:
        copies = approval_messages(slack, request_id)
        return len(copies) == 3 and all(
            action_ids(c) == [] and f"Approved by <@{ALICE}>" in blocks_text(c) for c in copies
        )

    wait_until(approved_copies, what="every copy of the request updated")
    lease_id, accessor, status = grant_refs(postgres, bot, request_id)
    assert status == "active" and lease_id.startswith(vault_db.path) and accessor
    assert request_status(postgres, bot, request_id) == "active"

    answer = click(bot, slack, REQUESTER, credentials, ActionId.REVOKE)
    assert "ended" in answer["text"]
    assert not postgres.role_exists(username)
    assert lease_gone(openbao, lease_id)
    assert login_fails(postgres, username, password)
    assert grant_refs(postgres, bot, request_id)[2] == "revoked"
    assert request_status(postgres, bot, request_id) == "ended"
    closed = credentials_message_after_close(slack, request_id)
    assert action_ids(closed) == []

    assert audit_actions(postgres, bot, request_id) == [
        "requested",
        "approved",
        "issued",
        "delivered",
        "revoked",
    ]
    audit_posts = [c.params["text"] for c in posts_to(slack, AUDIT)]
    assert any("requested" in t for t in audit_posts)
    assert any("revoked early" in t and "Vault confirmed" in t for t in audit_posts)
    # Wrapped delivery: the password never passes through Slack at all, nor logs nor database.
    assert_nowhere([password], slack=slack, bot=bot, postgres=postgres)

    # What an operator scrapes says the same.
    scraped = metrics_of(bot)
    assert scraped[("debug_access_requests_total", (("outcome", "submitted"),))] == 1
    assert scraped[("debug_access_requests_total", (("outcome", "granted"),))] == 1
    assert scraped[("debug_access_revocations_total", (("result", "ok"),))] == 1
    assert scraped[("debug_access_approval_wait_seconds_count", ())] == 1
    assert scraped[("debug_access_issue_seconds_count", ())] == 1
    assert 0 < scraped[("debug_access_issue_seconds_sum", ())] < 30
    for gauge in (
        "active_grants",
        "pending_requests",
        "grants_overdue",
        "users_locked",
        "locked_live_grants",
    ):
        assert scraped[(f"debug_access_{gauge}", ())] == 0, gauge
    assert scraped[("debug_access_vault_token_ttl_seconds", ())] == -1  # the dev root token
    assert scraped[("process_resident_memory_bytes", ())] > 0


def metrics_of(bot) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` of the bot, parsed as Prometheus parses it: (name, labels) -> value."""
    response = bot.sender.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def credentials_message_after_close(slack: SlackEmulator, request_id: int) -> dict:
    marker = f"(request #{request_id}) has ended"
    return wait_until(
        lambda: next(
            (m for m in slack.messages(slack.dm_channel(REQUESTER)) if marker in m.get("text", "")),
            None,
        ),
        what="closed DM",
    )


def test_dm_delivery_and_slash_revoke(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path, delivery="dm"))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 15m INC-1 slow queries")
    click(bot, slack, BOB, approval_message(slack, request_id), ActionId.APPROVE)
    credentials = credentials_message(slack, REQUESTER, request_id)
    section = next(
        b["text"]["text"]
        for b in credentials["blocks"]
        if "password: " in b.get("text", {}).get("text", "")
    )
    fields = dict(line.split(": ", 1) for line in section.split("```")[1].splitlines())
    username, password = fields["username"], fields["password"]
    assert pg_login_and_select(postgres, username, password) == 3
    # Only the requester's DM holds the values.
    assert_nowhere(
        [password],
        slack=slack,
        bot=bot,
        postgres=postgres,
        allowed_channels=[slack.dm_channel(REQUESTER)],
    )

    sent = bot.sender.slash(REQUESTER, f"revoke {request_id}")
    assert "ended" in reply_to(slack, str(sent.response_key), timeout=30)["text"]
    assert not postgres.role_exists(username)
    assert request_status(postgres, bot, request_id) == "ended"


def test_vault_policies_resource_gets_a_scoped_token(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    root = openbao.client()
    root.sys.create_or_update_policy(
        name="orders-logs-read", policy='path "secret/data/orders/*" { capabilities = ["read"] }'
    )
    root.secrets.kv.v2.create_or_update_secret(
        path="orders/logs", secret={"key": "v1"}, mount_point="secret"
    )
    root.secrets.kv.v2.create_or_update_secret(
        path="payments/other", secret={"key": "no"}, mount_point="secret"
    )
    bot = run_bot(policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "orders-logs 20m INC-7 log shipping")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    values = unwrap_from(credentials_message(slack, REQUESTER, request_id), openbao)
    user = hvac.Client(url=openbao.addr, token=values["token"])
    info = user.auth.token.lookup_self()["data"]
    assert set(info["policies"]) == {"debug-access-self-lookup", "orders-logs-read"}
    assert 19 * 60 < info["ttl"] <= 20 * 60
    with pytest.raises(hvac.exceptions.Forbidden):
        user.auth.token.renew_self()  # only the bot renews, after approval

    # An approved extension renews the very token the requester holds.
    sent = bot.sender.slash(REQUESTER, f"extend {request_id} 30m")
    reply_to(slack, str(sent.response_key))
    click(bot, slack, ALICE, approval_message(slack, request_id + 1), ActionId.APPROVE)
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "is extended until" in str(c.params.get("text"))
        ),
        timeout=30,
    )
    assert 49 * 60 < user.auth.token.lookup_self()["data"]["ttl"] <= 50 * 60
    read = user.secrets.kv.v2.read_secret_version(
        path="orders/logs", mount_point="secret", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"key": "v1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        user.secrets.kv.v2.read_secret_version(
            path="payments/other", mount_point="secret", raise_on_deleted_version=True
        )

    sent = bot.sender.slash(REQUESTER, f"revoke {request_id}")
    reply_to(slack, str(sent.response_key), timeout=30)
    with pytest.raises(hvac.exceptions.Forbidden):
        user.auth.token.lookup_self()
    assert_nowhere([values["token"]], slack=slack, bot=bot, postgres=postgres)


def test_deny_tells_the_requester_and_issues_nothing(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 1h INC-9 curious")
    answer = click(bot, slack, BOB, approval_message(slack, request_id), ActionId.DENY)
    assert "denied" in answer["text"]
    assert request_status(postgres, bot, request_id) == "denied"
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "denied your access request" in str(c.params.get("text"))
        ),
    )
    for copy in approval_messages(slack, request_id):
        assert action_ids(copy) == [] and f"Denied by <@{BOB}>" in blocks_text(copy)
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 0
    assert audit_actions(postgres, bot, request_id) == ["requested", "denied"]


def test_self_approval_and_bystanders_are_refused(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    # ALICE is an approver of payments-db, but not of her own request.
    request_id = request_access(bot, slack, ALICE, "payments-db 30m INC-5 my own")
    message = approval_message(slack, request_id)
    answer = click(bot, slack, ALICE, message, ActionId.APPROVE)
    assert answer["response_type"] == "ephemeral" and "your own request" in answer["text"]
    answer = click(bot, slack, "U0MALLORY", message, ActionId.APPROVE)
    assert "Only the approvers" in answer["text"]
    answer = click(bot, slack, "U0MALLORY", message, ActionId.DENY)
    assert "Only the approvers" in answer["text"]
    assert request_status(postgres, bot, request_id) == "pending"
    assert action_ids(approval_message(slack, request_id)) == [ActionId.APPROVE, ActionId.DENY]
    assert audit_actions(postgres, bot, request_id) == ["requested"]
    # ALICE's request went to BOB only: she is not asked to approve herself.
    assert not [
        m for m in slack.messages(slack.dm_channel(ALICE)) if "Access request" in m.get("text", "")
    ]


def test_concurrent_and_repeated_approvals_issue_one_credential(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-6 race")
    message = approval_message(slack, request_id)
    roles_before = set(r[0] for r in postgres.execute("SELECT rolname FROM pg_roles"))
    answers: list[dict] = []

    def approve(user: str) -> None:
        answers.append(click(bot, slack, user, message, ActionId.APPROVE))

    threads = [threading.Thread(target=approve, args=(u,)) for u in (ALICE, BOB, ALICE, BOB)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == 4
    winners = [a for a in answers if "You approved" in a["text"]]
    assert len(winners) == 1, answers
    assert sum("already" in a["text"] for a in answers) == 3
    credentials_message(slack, REQUESTER, request_id)
    assert bot_rows(postgres, bot, 'SELECT count(*) FROM "grant"')[0][0] == 1
    assert bot_rows(postgres, bot, "SELECT count(*) FROM decision")[0][0] == 1
    new_roles = set(r[0] for r in postgres.execute("SELECT rolname FROM pg_roles")) - roles_before
    assert len(new_roles) == 1, new_roles
    assert audit_actions(postgres, bot, request_id).count("issued") == 1


def test_vault_failure_at_approval_fails_cleanly(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    policy = policy_for(vault_db.path)
    policy["resources"]["broken-db"] = {
        "grant": {"type": "dynamic_secret", "path": "database/creds/no-such-role"},
        "max_duration": "1h",
        "approvers": [ALICE],
    }
    bot = run_bot(policy)
    request_id = request_access(bot, slack, REQUESTER, "broken-db 10m INC-8 will fail")
    answer = click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    assert "failed" in answer["text"]
    assert request_status(postgres, bot, request_id) == "failed"
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(REQUESTER)
            and "could not be issued" in str(c.params.get("text"))
        ),
    )
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel(ALICE)
            and "issuing failed" in str(c.params.get("text"))
        ),
    )
    rows = bot_rows(postgres, bot, 'SELECT status, token_accessor FROM "grant"')
    assert [r[0] for r in rows] == ["revoked"]  # the grant token was created, then cleaned up
    assert "failed" in audit_actions(postgres, bot, request_id)
    message = approval_message(slack, request_id)
    assert action_ids(message) == [] and "issuing failed" in blocks_text(message)
