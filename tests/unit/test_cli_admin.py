"""The command line's decisions for when Slack is down: argument parsing, who may (admins, then
the Slack rules), the audit trail's ``via: cli``, and the notice kinds that tell Slack later."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlmodel import Session, col, select

from bot.cli import build_parser, main
from bot.cli_admin import (
    ADMIN_ENV,
    NOT_AS_ASKED,
    cmd_approve,
    cmd_revoke,
    plain,
    request_line,
)
from bot.domain.errors import NotAllowed
from bot.domain.notices import AuditPost, NoticeKind
from bot.domain.permissions import check_may_end, check_may_use_command_line
from bot.domain.requests import RequestStatus, ValidRequest
from bot.domain.text import one_line
from bot.lifecycle import AccessLifecycle, Via
from bot.lifecycle.announce import MessageKind
from bot.lifecycle.outbox import OutboxNotifier
from bot.runtime import Attached
from bot.store.models import AccessRequest, AuditEvent, Notice
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    FakeNotifier,
    Harness,
    make_lifecycle,
)

ADMIN_POLICY = EXAMPLE_POLICY + f"admins: [{APPROVER}, {BYSTANDER}]\n"
HOUR = timedelta(hours=1)


# -- parsing --------------------------------------------------------------------------------------


def test_decision_commands_take_an_id_and_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    args = build_parser().parse_args(["approve", "42", "--as", "U0ADMIN"])
    assert (args.request_id, args.actor) == (42, "U0ADMIN")
    for command in ("deny", "revoke"):
        args = build_parser().parse_args([command, "7", "--as", "U0ADMIN"])
        assert (args.request_id, args.actor) == (7, "U0ADMIN")


def test_the_identity_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ADMIN_ENV, "U0FROMENV")
    assert build_parser().parse_args(["deny", "1"]).actor == "U0FROMENV"
    assert build_parser().parse_args(["deny", "1", "--as", "U0FLAG"]).actor == "U0FLAG"


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1e3", "99999999999", "\uff14\uff12"])
def test_a_request_id_that_names_no_row_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["approve", bad, "--as", "U0ADMIN"])
    assert exit_.value.code == 2
    assert "not a request id" in capsys.readouterr().err


def test_requests_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    args = build_parser().parse_args(
        ["requests", "--status", "pending", "--status", "active", "--json", "--as", "U0A"]
    )
    assert args.status == ["pending", "active"] and args.json and not args.all
    with pytest.raises(SystemExit):
        build_parser().parse_args(["requests", "--all", "--status", "pending"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["requests", "--status", "bogus"])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["approve", "3"], "name the admin you act as: --as USER_ID"),
        (["revoke", "3", "--as", "alice"], "not a Slack user id"),
        (["requests", "--as", "U0A\nB"], "not a Slack user id"),
    ],
)
def test_a_missing_or_malformed_identity_is_one_line_and_exit_2(
    argv: list[str], says: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ADMIN_ENV, raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1


def test_help_says_who_may() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["approve"].format_help()  # type: ignore[union-attr]
    assert "admins" in text and "approver of the" in text and "via: cli" in text


# -- printing user text safely --------------------------------------------------------------------


def test_one_line_escapes_every_control_character() -> None:
    assert one_line("a\nb\rc\td\x1b[31m\u2028e\\") == "a\\nb\\rc\\td\\x1b[31m\\u2028e\\\\"
    assert one_line("ünïcode ok") == "ünïcode ok"


def test_a_request_is_printed_on_one_line_with_its_reason_escaped(h_admin: Harness) -> None:
    request_id = submit(h_admin, reason='INC-1 "quoted"\n#2 pending U0FAKE payments-db\x1b[2J')
    line = request_line(h_admin.lifecycle.get(request_id))
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith(f"#{request_id}  pending  {REQUESTER}  payments-db  asks 1h  access")
    assert line.endswith('reason: "INC-1 "quoted"\\n#2 pending U0FAKE payments-db\\x1b[2J"')


def test_slack_messages_are_shown_plain() -> None:
    assert plain("<@U0ALICE> is not an admin\n") == "U0ALICE is not an admin\\n"


# -- the rules ------------------------------------------------------------------------------------


def test_only_an_admin_may_use_the_command_line() -> None:
    check_may_use_command_line("U0ADMIN", admin=True)
    with pytest.raises(NotAllowed, match="not an admin"):
        check_may_use_command_line("U0ADMIN", admin=False)


def test_an_admin_may_end_any_grant_others_need_to_be_requester_or_approver() -> None:
    check_may_end("U0ADMIN", REQUESTER, [], admin=True)
    check_may_end(REQUESTER, REQUESTER, [])
    with pytest.raises(NotAllowed):
        check_may_end("U0ADMIN", REQUESTER, [])


@pytest.fixture
def h_admin() -> Harness:
    return make_lifecycle(ADMIN_POLICY)


def submit(h: Harness, reason: str = "INC-4211 checkout errors") -> int:
    valid = ValidRequest("payments-db", HOUR, reason)
    return h.lifecycle.submit(REQUESTER, valid, "C0ORIGIN").view.id


def events(h: Harness, request_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    with Session(h.engine) as session:
        found = session.exec(
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id)
            .order_by(col(AuditEvent.id))
        )
        return [(e.action, e.actor, json.loads(e.details)) for e in found]


def status(h: Harness, request_id: int) -> str:
    with Session(h.engine) as session:
        row = session.get(AccessRequest, request_id)
        assert row is not None
        return row.status


def test_an_admin_approver_approves_from_the_command_line_audited_via_cli(
    h_admin: Harness,
) -> None:
    request_id = submit(h_admin)
    view = h_admin.lifecycle.decide(request_id, APPROVER, approve=True, via=Via.CLI)
    assert view.status is RequestStatus.ACTIVE
    approved = [e for e in events(h_admin, request_id) if e[0] == "approved"]
    assert approved == [("approved", APPROVER, {"via": "cli"})]
    assert any(
        "approved by <@U0ALICE> via CLI" in text for _, _, text, _ in h_admin.notifier.audits
    )
    assert len(h_admin.notifier.deliveries) == 1  # credentials by DM, as from Slack


def test_a_slack_click_is_audited_as_before(h_admin: Harness) -> None:
    request_id = submit(h_admin)
    h_admin.lifecycle.decide(request_id, APPROVER, approve=True)
    assert [e for e in events(h_admin, request_id) if e[0] == "approved"] == [
        ("approved", APPROVER, {})
    ]


@pytest.mark.parametrize(
    ("policy", "actor", "why"),
    [
        # An approver, but not an admin: Slack's rules alone do not open the command line.
        (EXAMPLE_POLICY + f"admins: [{BYSTANDER}]\n", OTHER_APPROVER, "not an admin"),
        # An admin, but not an approver of the resource.
        (ADMIN_POLICY, BYSTANDER, "Only the approvers"),
        # An admin approver who asked for it.
        (EXAMPLE_POLICY + f"admins: [{REQUESTER}]\n", REQUESTER, "your own request"),
    ],
)
@pytest.mark.parametrize("approve", [True, False])
def test_a_refused_decision_changes_nothing(
    policy: str, actor: str, why: str, approve: bool
) -> None:
    h = make_lifecycle(policy)
    request_id = submit(h)
    before = events(h, request_id)
    calls = len(h.notifier.calls)
    with pytest.raises(NotAllowed, match=why):
        h.lifecycle.decide(request_id, actor, approve=approve, via=Via.CLI)
    assert status(h, request_id) == "pending"
    assert events(h, request_id) == before
    assert len(h.notifier.calls) == calls
    assert h.issuer.count("create_grant_token") == 0


def test_an_admin_revokes_any_grant_audited_via_cli(h_admin: Harness) -> None:
    request_id = submit(h_admin)
    h_admin.lifecycle.decide(request_id, APPROVER, approve=True)
    # BYSTANDER is an admin, neither requester nor approver: enough on the command line.
    view = h_admin.lifecycle.revoke_early(request_id, BYSTANDER, via=Via.CLI)
    assert view.status is RequestStatus.ENDED
    revoked = [e for e in events(h_admin, request_id) if e[0] == "revoked"]
    assert revoked[0][1] == BYSTANDER and revoked[0][2]["via"] == "cli"
    assert not h_admin.issuer.live
    assert any(
        "revoked early by <@U0MALLORY> via CLI" in t for _, _, t, _ in h_admin.notifier.audits
    )


def test_revoke_from_the_command_line_refuses_non_admins_and_waiting_requests() -> None:
    h = make_lifecycle(EXAMPLE_POLICY + f"admins: [{BYSTANDER}]\n")
    request_id = submit(h)
    with pytest.raises(NotAllowed, match="use Deny"):
        h.lifecycle.revoke_early(request_id, BYSTANDER, via=Via.CLI)
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    with pytest.raises(NotAllowed, match="not an admin"):
        h.lifecycle.revoke_early(request_id, APPROVER, via=Via.CLI)  # approver, not admin
    assert status(h, request_id) == "active" and h.issuer.live


def test_listing_by_status(h_admin: Harness) -> None:
    waiting, denied = submit(h_admin), submit(h_admin)
    h_admin.lifecycle.decide(denied, APPROVER, approve=False)
    open_ = [s for s in RequestStatus if s.is_open]
    assert [v.id for v in h_admin.lifecycle.listing(open_)] == [waiting]
    assert [v.id for v in h_admin.lifecycle.listing(None)] == [denied, waiting]
    assert [v.id for v in h_admin.lifecycle.listing([RequestStatus.DENIED])] == [denied]


# -- telling Slack afterwards: the notice kinds ---------------------------------------------------


def cli_side(h: Harness, slack: FakeNotifier) -> Harness:
    """The same database as ``h`` (the bot), decided on by a command line whose Slack is
    ``slack``, through the outbox (as ``bot.runtime.attach_lifecycle`` wires it)."""
    outbox = OutboxNotifier(slack, h.engine, h.clock, actor=APPROVER)
    lifecycle = AccessLifecycle(
        engine=h.engine,
        policy=h.policy,
        issuer=h.issuer,
        notifier=outbox,
        clock=h.clock,
        approvers=h.lifecycle.edges.approvers,
    )
    return Harness(lifecycle, h.engine, h.policy, h.issuer, slack, h.clock)


def notices(h: Harness) -> list[tuple[str, str, int | None, bool]]:
    with Session(h.engine) as session:
        return [
            (n.kind, n.user, n.request_id, n.sent_at is not None)
            for n in session.exec(select(Notice).order_by(col(Notice.id)))
        ]


def test_a_denial_while_slack_is_down_is_queued_and_sent_by_the_bot_once_slack_answers(
    h_admin: Harness,
) -> None:
    request_id = submit(h_admin)
    down = FakeNotifier(slack_down=True)
    cli = cli_side(h_admin, down)
    view = cli.lifecycle.decide(request_id, APPROVER, approve=False, via=Via.CLI)
    assert view.status is RequestStatus.DENIED  # the fact is in the database
    queued = notices(h_admin)
    assert sorted(k for k, _, _, _ in queued) == ["audit", "dm", "refresh"]
    assert all(rid == request_id or kind == "dm" for kind, _, rid, _ in queued)
    assert not any(sent for *_, sent in queued)
    assert sorted(cast(OutboxNotifier, cli.lifecycle.edges.notifier).queued) == [
        "audit",
        "dm",
        "refresh",
    ]

    # The bot's tick while Slack still refuses: nothing lost, nothing sent.
    h_admin.notifier.slack_down = True
    h_admin.clock.advance(timedelta(seconds=6))
    h_admin.tick()
    assert not any(sent for *_, sent in notices(h_admin))

    # Slack answers: the bot sends each kind.
    h_admin.notifier.slack_down = False
    h_admin.clock.advance(timedelta(seconds=60))
    h_admin.tick()
    assert all(sent for *_, sent in notices(h_admin))
    dm = [t for u, t in h_admin.notifier.tells if u == REQUESTER and "denied" in t]
    assert len(dm) == 1 and "<@U0ALICE> denied your access request" in dm[0]
    (update,) = [a for a in h_admin.notifier.of("update_request") if a[-1]]
    assert update[0].status is RequestStatus.DENIED and update[0].id == request_id
    approvals = h_admin.lifecycle.notices.tell.refs(request_id, MessageKind.APPROVAL)
    assert list(update[1]) == approvals and approvals
    posted = [a for a in h_admin.notifier.of("post_audit") if a[-1]]
    assert [a[1] for a in posted] == ["denied"]
    assert "denied by <@U0ALICE> via CLI" in posted[0][2]


def test_slack_up_the_command_line_tells_slack_at_once_and_queues_nothing(
    h_admin: Harness,
) -> None:
    request_id = submit(h_admin)
    up = FakeNotifier()
    cli = cli_side(h_admin, up)
    cli.lifecycle.decide(request_id, APPROVER, approve=False, via=Via.CLI)
    assert notices(h_admin) == []
    assert [a[1] for a in up.of("post_audit")] == ["denied"]
    assert up.of("update_request") and any("denied" in t for _, t in up.tells)


def test_one_refresh_is_queued_per_request(h_admin: Harness) -> None:
    request_id = submit(h_admin)
    outbox = OutboxNotifier(FakeNotifier(slack_down=True), h_admin.engine, h_admin.clock)
    view = h_admin.lifecycle.get(request_id)
    outbox.refresh_request(view, [])
    outbox.refresh_request(view, [])
    assert [k for k, *_ in notices(h_admin)] == ["refresh"]


def test_a_kind_this_release_does_not_know_is_left_for_one_that_does(h_admin: Harness) -> None:
    request_id = submit(h_admin)
    with Session(h_admin.engine) as session:
        session.add(
            Notice(
                user=APPROVER,
                text="{}",
                request_id=request_id,
                created_at=h_admin.clock.now(),
                next_attempt_at=h_admin.clock.now(),
                kind="lock",
            )
        )
        session.commit()
    assert h_admin.lifecycle.notices.send_queued() == 0
    assert notices(h_admin) == [("lock", APPROVER, request_id, False)]


def test_an_unreadable_audit_notice_is_set_aside_not_retried_forever(h_admin: Harness) -> None:
    request_id = submit(h_admin)
    with Session(h_admin.engine) as session:
        session.add(
            Notice(
                user=APPROVER,
                text="not json",
                request_id=request_id,
                created_at=h_admin.clock.now(),
                next_attempt_at=h_admin.clock.now(),
                kind=NoticeKind.AUDIT,
            )
        )
        session.commit()
    h_admin.lifecycle.notices.send_queued()
    with Session(h_admin.engine) as session:
        (notice,) = session.exec(select(Notice))
        assert notice.sent_at is not None and "set aside" in (notice.last_error or "")


def test_audit_post_round_trip_and_rejects_what_is_not_one() -> None:
    post = AuditPost("revoked", "revoked early by <@U0A> via CLI", alert=True)
    assert AuditPost.loads(post.dumps()) == post
    for bad in ("[]", '{"action": 1, "text": "x"}', "{", '{"action": "a"}'):
        with pytest.raises(ValueError, match="not an audit post"):
            AuditPost.loads(bad)


# -- what the command line prints: honest about the outcome ---------------------------------------


def attached_to(h: Harness, slack: FakeNotifier) -> Attached:
    cli = cli_side(h, slack)
    outbox = cast(OutboxNotifier, cli.lifecycle.edges.notifier)
    return Attached(lifecycle=cli.lifecycle, outbox=outbox, engine=h.engine)


def test_approve_prints_issued_and_delivered(
    h_admin: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = submit(h_admin)
    args = argparse.Namespace(request_id=request_id, actor=APPROVER)
    assert cmd_approve(attached_to(h_admin, FakeNotifier()), args) == 0
    out = capsys.readouterr()
    assert "credentials issued and delivered to U0CAROL by Slack DM" in out.out
    assert out.err == ""  # Slack took everything: nothing queued


def test_approve_whose_credentials_slack_refuses_says_revoked_and_exits_1(
    h_admin: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = submit(h_admin)
    slack = FakeNotifier(slack_down=True)
    attached = attached_to(h_admin, slack)
    attached.lifecycle.issuing.sleep = h_admin.clock.sleep  # the 30 s window on the fake clock
    args = argparse.Namespace(request_id=request_id, actor=APPROVER)
    assert cmd_approve(attached, args) == NOT_AS_ASKED
    out = capsys.readouterr()
    assert "but it failed" in out.out and "Vault confirmed the grant is revoked" in out.out
    assert "Slack did not answer" in out.err
    assert not h_admin.issuer.live
    assert "credentials issued and delivered" not in out.out


def test_revoke_vault_has_not_confirmed_exits_1(
    h_admin: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = submit(h_admin)
    h_admin.lifecycle.decide(request_id, APPROVER, approve=True)
    h_admin.issuer.fail("revoke")
    args = argparse.Namespace(request_id=request_id, actor=BYSTANDER)
    assert cmd_revoke(attached_to(h_admin, FakeNotifier()), args) == NOT_AS_ASKED
    assert "Vault has not confirmed" in capsys.readouterr().out
