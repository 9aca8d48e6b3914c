"""The security team's surfaces end to end: the threaded audit channel, `audit verify` and
`audit export`, the daily digest, and the App Home with its buttons."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.slack.ids import ActionId, CallbackId
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    AUDIT,
    BOB,
    REQUESTER,
    approval_message,
    bot_rows,
    click,
    credentials_message,
    policy_for,
    posts_to,
    request_access,
    request_status,
    wait_until,
)
from tests.integration.services import PostgresServer, VaultDatabase

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def granted_and_revoked(bot, slack: SlackEmulator) -> int:
    request_id = request_access(bot, slack, REQUESTER, "payments-db 30m INC-30 audit me")
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    click(bot, slack, REQUESTER, credentials_message(slack, REQUESTER, request_id), ActionId.REVOKE)
    return request_id


def test_audit_channel_has_one_thread_per_request(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    first = granted_and_revoked(bot, slack)
    second = request_access(bot, slack, REQUESTER, "payments-db 30m INC-31 second")
    click(bot, slack, BOB, approval_message(slack, second), ActionId.DENY)
    wait_until(lambda: request_status(postgres, bot, first) == "ended")
    posts = posts_to(slack, AUDIT)
    roots = [c for c in posts if not c.params.get("thread_ts")]
    assert [r.params["text"].split(" ")[0] for r in roots] == [f"#{first}", f"#{second}"]
    root_ts = {r.response["ts"]: r.params["text"].split(" ")[0] for r in roots}
    replies = [c for c in posts if c.params.get("thread_ts")]
    by_thread = {
        ts: [c.params["text"] for c in replies if c.params["thread_ts"] == ts] for ts in root_ts
    }
    first_thread = next(v for ts, v in by_thread.items() if root_ts[ts] == f"#{first}")
    assert [t.split(": ", 1)[1][:8] for t in first_thread] == ["approved", "issued, ", "revoked "]
    second_thread = next(v for ts, v in by_thread.items() if root_ts[ts] == f"#{second}")
    assert len(second_thread) == 1 and "denied by" in second_thread[0]


def cli(bot, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in bot.env.items()}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=bot.workdir,
    )


def test_audit_verify_and_export_round_trip_and_catch_tampering(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    granted_and_revoked(bot, slack)
    events = bot_rows(postgres, bot, "SELECT id, action, hash FROM audit_event ORDER BY id")
    assert len(events) == 5

    ok = cli(bot, "audit", "verify")
    assert ok.returncode == 0 and "audit chain intact: 5 events" in ok.stdout

    jsonl = cli(bot, "audit", "export", "--since", "2000-01-01")
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [(r["id"], r["action"], r["hash"]) for r in rows] == [tuple(e) for e in events]
    as_csv = cli(bot, "audit", "export", "--since", "2000-01-01", "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(int(r["id"]), r["action"], r["hash"]) for r in parsed] == [tuple(e) for e in events]
    none = cli(bot, "audit", "export", "--since", "2999-01-01")
    assert none.stdout == "" and "exported 0 events" in none.stderr

    dbname = bot.env["DATABASE_URL"].rsplit("/", 1)[-1]
    postgres.execute("UPDATE audit_event SET actor = 'U0SOMEONEELSE' WHERE id = 2", dbname=dbname)
    broken = cli(bot, "audit", "verify")
    assert broken.returncode == 1 and "BROKEN at event 2" in broken.stdout
    postgres.execute("UPDATE audit_event SET actor = 'U0ALICE' WHERE id = 2", dbname=dbname)
    assert cli(bot, "audit", "verify").returncode == 0
    postgres.execute("DELETE FROM audit_event WHERE id = 3", dbname=dbname)
    deleted = cli(bot, "audit", "verify")
    assert deleted.returncode == 1 and "BROKEN at event 4" in deleted.stdout


def test_digest_now_posts_the_day_with_a_thread_and_csv_when_long(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    policy = policy_for(
        vault_db.path, digest={"schedule": "0 9 * * *", "timezone": "Europe/Berlin"}
    )
    bot = run_bot(policy)
    result = cli(bot, "digest", "--now")
    assert result.returncode == 0, result.stderr
    empty = posts_to(slack, AUDIT)[-1].params
    assert empty["text"].startswith("No access requests in the 24 h")

    granted_and_revoked(bot, slack)
    denied = request_access(bot, slack, REQUESTER, "payments-db 30m INC-32 no thanks")
    click(bot, slack, BOB, approval_message(slack, denied), ActionId.DENY)
    # A busy day: sixty more grants, recorded the way the bot records them.
    dbname = bot.env["DATABASE_URL"].rsplit("/", 1)[-1]
    postgres.execute(
        "INSERT INTO access_request (requester, resource, duration_seconds, reason, status, "
        "created_at, updated_at, decided_by, decided_at, kind, break_glass, approvals_required, "
        "asked, asked_sources, escalation_level) SELECT 'U0BULK' || g, 'payments-db', 1800, "
        "'INC-' || g || ' <!channel> bulk', 'ended', now() - interval '2 hours', now(), "
        "'U0ALICE', now() - interval '2 hours', 'access', false, 1, '[]', '[]', 0 "
        "FROM generate_series(1, 60) g",
        dbname=dbname,
    )
    postgres.execute(
        'INSERT INTO "grant" (request_id, status, token_accessor, lease_id, issued_at, '
        "expires_at, ended_at, end_reason, revoke_attempts) SELECT id, 'revoked', 'acc' || id, "
        "'database/creds/payments-readonly/l' || id, now() - interval '2 hours', "
        "now() - interval '90 minutes', now() - interval '90 minutes', 'expired', 0 "
        "FROM access_request WHERE requester LIKE 'U0BULK%'",
        dbname=dbname,
    )
    slack.clear()
    result = cli(bot, "digest", "--now")
    assert result.returncode == 0, result.stderr
    posts = posts_to(slack, AUDIT)
    main = posts[0].params
    header = main["blocks"][0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert len(main["blocks"]) <= 50
    text = json.dumps(main["blocks"])
    assert "requested" in text and "denied" in text
    thread = [p for p in posts[1:] if p.params.get("thread_ts") == posts[0].response["ts"]]
    assert thread, "long lists go into the thread"
    for message in [main, *(p.params for p in thread)]:
        assert len(message["blocks"]) <= 50
        for block in message["blocks"]:
            if block.get("type") == "section":
                assert len(block["text"]["text"]) <= 3000
        assert "<!channel>" not in json.dumps(message)
    uploads = {f["filename"].rsplit(".", 1)[-1]: f for f in slack.files.values()}
    assert set(uploads) == {"csv", "png"}
    for upload in uploads.values():
        assert upload["thread_ts"] == posts[0].response["ts"] and upload["channel"] == AUDIT
    rows = list(csv.DictReader(io.StringIO(uploads["csv"]["content"].decode())))
    assert len(rows) == 61
    # The chart: a real PNG Pillow can read back, of a size Slack previews.
    with Image.open(io.BytesIO(uploads["png"]["content"])) as chart:
        assert chart.format == "PNG" and chart.width == 720 and 80 < chart.height < 600


def publish_home(bot, slack: SlackEmulator, user: str) -> dict:
    slack.clear()
    assert (
        bot.sender.event(
            {
                "type": "app_home_opened",
                "user": user,
                "tab": "home",
                "channel": slack.dm_channel(user),
            }
        ).status_code
        == 200
    )
    return slack.wait_for("views.publish", lambda c: c.params["user_id"] == user).params["view"]


def home_buttons(view: dict) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e.get("value", ""))
        for b in view["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def test_app_home_shows_where_everyone_stands_and_its_buttons_work(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
) -> None:
    bot = run_bot(policy_for(vault_db.path))
    home = publish_home(bot, slack, REQUESTER)
    assert home_buttons(home) == [(ActionId.OPEN_REQUEST_FORM, "home")]
    bot.sender.click_in_view(REQUESTER, home, ActionId.OPEN_REQUEST_FORM)
    form = slack.wait_for("views.open").params["view"]
    assert form["callback_id"] == CallbackId.REQUEST_MODAL

    first = request_access(bot, slack, REQUESTER, "payments-db 30m INC-33 from home")
    approver_home = publish_home(bot, slack, ALICE)
    assert (ActionId.APPROVE, str(first)) in home_buttons(approver_home)
    assert "INC-33 from home" in json.dumps(approver_home)
    bot.sender.click_in_view(ALICE, approver_home, ActionId.APPROVE)
    credentials_message(slack, REQUESTER, first)
    # The DM goes out first; the grant turns active in the commit right after it.
    wait_until(lambda: request_status(postgres, bot, first) == "active", timeout=10)
    # The lifecycle refreshed the homes itself; the approver's queue is empty again.
    refreshed = slack.wait_for(
        "views.publish",
        lambda c: c.params["user_id"] == ALICE and "Nothing" in json.dumps(c.params["view"]),
    ).params["view"]
    assert (ActionId.APPROVE, str(first)) not in home_buttons(refreshed)

    requester_home = publish_home(bot, slack, REQUESTER)
    assert (ActionId.REVOKE, str(first)) in home_buttons(requester_home)
    assert (ActionId.EXTEND, str(first)) in home_buttons(requester_home)
    bot.sender.click_in_view(REQUESTER, requester_home, ActionId.EXTEND)
    extend_form = slack.wait_for(
        "views.open", lambda c: c.params["view"]["callback_id"] == CallbackId.EXTEND_MODAL
    ).params["view"]
    assert json.loads(extend_form["private_metadata"]) == {"request_id": first}
    bot.sender.click_in_view(REQUESTER, requester_home, ActionId.REVOKE)
    wait_until(lambda: request_status(postgres, bot, first) == "ended", timeout=30)
    after = publish_home(bot, slack, REQUESTER)
    assert not [b for b in home_buttons(after) if b[0] == ActionId.REVOKE]
    assert f"#{first} `payments-db`" in json.dumps(after)  # among the recent decisions

    # A bystander's click in a stale Home gets a DM, and changes nothing.
    second = request_access(bot, slack, REQUESTER, "payments-db 30m INC-34 again")
    stale = publish_home(bot, slack, ALICE)
    bot.sender.click_in_view("U0MALLORY", stale, ActionId.APPROVE)
    slack.wait_for(
        "chat.postMessage",
        lambda c: (
            c.params.get("channel") == slack.dm_channel("U0MALLORY")
            and "Only the approvers" in str(c.params.get("text"))
        ),
    )
    assert request_status(postgres, bot, second) == "pending"
