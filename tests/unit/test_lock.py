"""The kill switch: an admin locks a user, who loses every grant (Vault confirming), every
pending request, every say as an approver, and gets nothing new until unlocked; the timers
finish whatever the lock itself could not."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, col, select

from bot.audit import AuditAction, verify_chain
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.requests import RequestStatus, ValidRequest
from bot.lifecycle import Via
from bot.lifecycle import decide as decide_module
from bot.lifecycle import lock as lock_module
from bot.lifecycle import review as review_module
from bot.lifecycle.lock import lock_text
from bot.store.models import AccessRequest, AuditEvent, Grant, UserLock
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    Harness,
    StaticApprovers,
    make_lifecycle,
)
from tests.unit.test_ssh_keys import ED25519_LINE

ADMIN = "U0SECADMIN"
OTHER_ADMIN = "U0SECOTHER"
HOUR = timedelta(hours=1)
POLICY = EXAMPLE_POLICY.replace(
    "delivery: wrapped\n", f"delivery: wrapped\nadmins: [{ADMIN}, {OTHER_ADMIN}]\n"
)


@pytest.fixture
def h() -> Harness:
    return make_lifecycle(POLICY)


def submit(h: Harness, requester: str = REQUESTER, resource: str = "payments-db") -> int:
    valid = ValidRequest(resource, HOUR, "INC-4211 checkout errors")
    return h.lifecycle.submit(requester, valid, None).view.id


def active(h: Harness, requester: str = REQUESTER) -> int:
    request_id = submit(h, requester)
    approver = APPROVER if requester != APPROVER else OTHER_APPROVER
    assert h.lifecycle.decide(request_id, approver, approve=True).status is RequestStatus.ACTIVE
    return request_id


def status(h: Harness, request_id: int) -> RequestStatus:
    return h.lifecycle.get(request_id).status


def events(h: Harness, action: AuditAction) -> list[AuditEvent]:
    with Session(h.engine) as session:
        return list(session.exec(select(AuditEvent).where(AuditEvent.action == action.value)))


def lock_row_only(h: Harness, reason: str) -> None:
    """The lock's first step alone (its row), as if the process stopped right after it."""
    with Session(h.engine) as session:
        session.add(
            UserLock(
                user=REQUESTER,
                reason=reason,
                locked_by=ADMIN,
                locked_via="slack",
                locked_at=h.clock.now(),
            )
        )
        session.commit()


def test_lock_revokes_every_grant_with_vault_confirming_and_denies_pending(h: Harness) -> None:
    grants = [active(h) for _ in range(3)]
    pending = submit(h)
    others = active(h, requester=BYSTANDER)

    report = h.lifecycle.lock_user(REQUESTER, ADMIN, "laptop stolen")

    assert (report.grants, report.revoked, report.denied, report.still_revoking) == (3, 3, 1, 0)
    assert [status(h, r) for r in grants] == [RequestStatus.ENDED] * 3
    assert status(h, pending) is RequestStatus.DENIED
    assert status(h, others) is RequestStatus.ACTIVE  # only the locked user's
    with Session(h.engine) as session:
        ended = session.exec(select(Grant).where(col(Grant.request_id).in_(grants))).all()
    assert {g.end_reason for g in ended} == {"locked"} and {g.ended_by for g in ended} == {ADMIN}
    assert not {g.lease_id for g in ended} & h.issuer.live_leases  # Vault: gone
    with Session(h.engine) as session:
        kept = session.exec(select(Grant).where(Grant.request_id == others)).one()
    assert kept.lease_id in h.issuer.live_leases
    (locked,) = events(h, AuditAction.LOCKED)
    assert (locked.actor, locked.request_id) == (ADMIN, None)
    assert '"reason":"laptop stolen"' in locked.details and '"via":"slack"' in locked.details
    alerts = [text for _view, action, text, alert in h.notifier.audits if action == "locked"]
    assert any("laptop stolen" in t for t in alerts) and any("3 of 3" in t for t in alerts)
    with Session(h.engine) as session:
        assert verify_chain(session).ok


def test_a_locked_user_can_neither_ask_extend_approve_nor_be_asked(h: Harness) -> None:
    theirs = active(h, requester=OTHER_APPROVER)
    h.lifecycle.lock_user(APPROVER, ADMIN, "session token leaked", via=Via.CLI)

    waiting = submit(h)  # payments-db: ALICE (locked) and BOB may approve
    assert h.lifecycle.get(waiting).approvers == (OTHER_APPROVER,)  # only Bob is asked
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.decide(waiting, APPROVER, approve=True)
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.decide(waiting, APPROVER, approve=False)
    with pytest.raises(NotAllowed, match="locked your access"):
        submit(h, requester=APPROVER)
    assert status(h, waiting) is RequestStatus.PENDING
    assert status(h, theirs) is RequestStatus.ACTIVE
    with pytest.raises(NotAllowed, match="Nobody but you can approve `orders-logs`"):
        submit(h, resource="orders-logs")  # Alice is its only approver


def test_a_locked_approvers_earlier_approval_no_longer_counts() -> None:
    h = make_lifecycle(
        POLICY.replace(
            "    approvers: [U0ALICE, U0BOB]\n",
            "    approvers: [U0ALICE, U0BOB, U0DAVE]\n    approvals_required: 2\n",
        )
    )
    request_id = submit(h)
    h.lifecycle.decide(request_id, APPROVER, approve=True)  # 1 of 2
    h.lifecycle.lock_user(APPROVER, ADMIN, "phished")
    view = h.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)
    assert view.status is RequestStatus.PENDING  # Alice's no longer counts: still 1 of 2
    assert h.lifecycle.decide(request_id, "U0DAVE", approve=True).status is RequestStatus.ACTIVE


def test_only_an_unlocked_admin_may_lock_and_nobody_twice(h: Harness) -> None:
    grant = active(h)
    with pytest.raises(NotAllowed, match="not an admin"):
        h.lifecycle.lock_user(REQUESTER, APPROVER, "because")
    assert status(h, grant) is RequestStatus.ACTIVE and h.lifecycle.standing_locks() == []
    with pytest.raises(UserError, match="Say why"):
        h.lifecycle.lock_user(REQUESTER, ADMIN, "   ")
    h.lifecycle.lock_user(REQUESTER, ADMIN, "first")
    with pytest.raises(Conflict, match="already locked"):
        h.lifecycle.lock_user(REQUESTER, OTHER_ADMIN, "second")
    h.lifecycle.lock_user(ADMIN, OTHER_ADMIN, "admin account taken over")
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.unlock_user(REQUESTER, ADMIN)  # a locked admin is no admin
    with pytest.raises(NotAllowed, match="cannot unlock yourself"):
        h.lifecycle.unlock_user(OTHER_ADMIN, OTHER_ADMIN)
    assert [lock.user for lock in h.lifecycle.standing_locks()] == [REQUESTER, ADMIN]


def test_unlock_lifts_the_lock_keeps_its_history_and_allows_asking_again(h: Harness) -> None:
    h.lifecycle.lock_user(REQUESTER, ADMIN, "false alarm?")
    with pytest.raises(NotAllowed):
        submit(h)
    h.clock.advance(timedelta(minutes=5))
    h.lifecycle.unlock_user(REQUESTER, OTHER_ADMIN, via=Via.CLI)
    assert h.lifecycle.standing_locks() == []
    assert status(h, submit(h)) is RequestStatus.PENDING
    with pytest.raises(Conflict, match="is not locked"):
        h.lifecycle.unlock_user(REQUESTER, OTHER_ADMIN)
    with Session(h.engine) as session:
        (lock,) = session.exec(select(UserLock)).all()
    assert (lock.locked_by, lock.lifted_by, lock.lifted_via) == (ADMIN, OTHER_ADMIN, "cli")
    (unlocked,) = events(h, AuditAction.UNLOCKED)
    assert '"via":"cli"' in unlocked.details


def test_a_revocation_vault_refuses_stays_due_and_the_timers_finish_it(h: Harness) -> None:
    grants = [active(h) for _ in range(2)]
    h.issuer.fail("revoke", times=1)
    report = h.lifecycle.lock_user(REQUESTER, ADMIN, "compromised")
    assert (report.revoked, report.still_revoking) == (1, 1)
    assert sorted(status(h, r) for r in grants) == [RequestStatus.ENDED, RequestStatus.REVOKING]
    h.clock.advance(timedelta(minutes=1))
    h.tick()
    assert [status(h, r) for r in grants] == [RequestStatus.ENDED] * 2


def test_what_the_lock_missed_is_due_work_on_every_tick(h: Harness) -> None:
    """A lock whose process stopped right after the lock row committed: the tick revokes the
    grants and denies the requests, as often as it takes, after any restart."""
    grant = active(h)
    pending = submit(h)
    lock_row_only(h, "written, then the process died")
    assert h.due("locked requester's grant") != [] and h.due("locked requester's request") != []
    h.tick()
    assert status(h, grant) is RequestStatus.ENDED and status(h, pending) is RequestStatus.DENIED
    assert h.due("locked requester's grant") == [] == h.due("locked requester's request")


def test_an_approval_issued_after_the_lock_issues_nothing(h: Harness) -> None:
    """Approved a moment before the lock, issued a moment after: Issue checks first."""
    request_id = submit(h)
    lock_row_only(h, "raced")
    # The lock's own sweep has not run (it raced): the approval still finds the request pending.
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is RequestStatus.FAILED
    assert h.issuer.count("create") == 0
    with Session(h.engine) as session:
        assert session.exec(select(Grant).where(Grant.request_id == request_id)).first() is None


class GroupDirectory(StaticApprovers):
    """Slack says U0INGROUP is in the S0SECURITY user group, and nobody else in any."""

    def in_any_group(self, user: str, groups: Sequence[str]) -> bool:
        return user == "U0INGROUP" and "S0SECURITY" in groups


def test_admins_may_be_named_by_user_group() -> None:
    policy = EXAMPLE_POLICY.replace(
        "delivery: wrapped\n", "delivery: wrapped\nadmins: [S0SECURITY]\n"
    )
    edges = replace(make_lifecycle(policy).lifecycle.edges, approvers=GroupDirectory())
    assert edges.is_admin("U0INGROUP") and not edges.is_admin(BYSTANDER)
    with pytest.raises(NotAllowed, match="not an admin"):
        edges.check_admin(BYSTANDER)


def test_nothing_waits_for_a_locked_approver_on_their_home(h: Harness) -> None:
    waiting = submit(h)
    assert [v.id for v in h.lifecycle.waiting_for(APPROVER)] == [waiting]
    h.lifecycle.lock_user(APPROVER, ADMIN, "phished")
    assert h.lifecycle.waiting_for(APPROVER) == []
    assert [v.id for v in h.lifecycle.waiting_for(OTHER_APPROVER)] == [waiting]


def test_an_approver_locked_while_their_approval_is_in_flight_approves_nothing(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock commits after Decide checked the approver, before their decision commits."""
    request_id = submit(h)
    checked = decide_module.refuse_locked

    def then_locked(edges: Any, actor: str, doing: str) -> None:
        checked(edges, actor, doing)
        h.lifecycle.lock_user(actor, ADMIN, "phished")

    monkeypatch.setattr(decide_module, "refuse_locked", then_locked)
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert status(h, request_id) is RequestStatus.PENDING
    assert h.issuer.count("create") == 0


def lock_row(h: Harness, user: str) -> None:
    """The lock row committed, its sweep not run yet (it raced, or its process died)."""
    with Session(h.engine) as session:
        session.add(
            UserLock(
                user=user,
                reason="raced",
                locked_by=ADMIN,
                locked_via="slack",
                locked_at=h.clock.now(),
            )
        )
        session.commit()


def test_an_extension_approved_for_a_locked_requester_renews_nothing(h: Harness) -> None:
    """Their extension was still pending when the lock committed (its sweep not yet run)."""
    parent = active(h)
    extension = h.lifecycle.request_extension(parent, REQUESTER, "30m").view.id
    with Session(h.engine) as session:
        before = session.exec(select(Grant).where(Grant.request_id == parent)).one().expires_at
    lock_row(h, REQUESTER)
    view = h.lifecycle.decide(extension, OTHER_APPROVER, approve=True)
    assert view.status is RequestStatus.FAILED
    assert h.issuer.count("renew") == 0
    with Session(h.engine) as session:
        after = session.exec(select(Grant).where(Grant.request_id == parent)).one().expires_at
    assert after == before


def test_the_report_counts_grants_another_replicas_timer_revoked_first(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every replica's tick revokes a locked user's grants as soon as the lock row commits,
    often before the lock's own sweep looks (as on the real services): the admin must still
    read "3 of 3", never "0 of 0", and a revocation Vault refuses there must still alert."""
    for _ in range(3):
        active(h)
    h.issuer.fail("revoke", times=1)
    sweep = h.lifecycle.locking._settle

    def timers_first(being_issued: list[int]) -> None:
        h.tick()  # another replica, between the lock's commit and its sweep
        sweep(being_issued)

    monkeypatch.setattr(h.lifecycle.locking, "_settle", timers_first)
    report = h.lifecycle.lock_user(REQUESTER, ADMIN, "laptop stolen")
    assert (report.grants, report.revoked, report.still_revoking) == (3, 3, 0)


SSH_POLICY = POLICY + (
    "  ops-host:\n"
    "    description: Shell on the ops hosts\n"
    "    grant: {type: ssh_certificate, role: ops, principals: [ops], key_types: [ssh-ed25519]}\n"
    "    approvers: [U0ALICE]\n"
)


def test_the_lock_report_says_an_ssh_certificate_still_logs_in() -> None:
    """A certificate cannot be recalled: the admin must not read "revoked, Vault confirmed"
    alone and believe the account holds nothing."""
    h = make_lifecycle(SSH_POLICY)
    valid = ValidRequest("ops-host", timedelta(minutes=30), "INC-9 disk full")
    rid = h.lifecycle.submit(REQUESTER, valid, "C0ORIGIN", public_key=ED25519_LINE).view.id
    assert h.lifecycle.decide(rid, APPROVER, approve=True).status is RequestStatus.ACTIVE
    report = h.lifecycle.lock_user(REQUESTER, ADMIN, "laptop stolen")
    for text in (
        lock_text(report),
        next(t for _v, action, t, _a in h.notifier.audits if action == "locked"),
    ):
        assert "1 SSH certificate(s) cannot be recalled" in text
        assert "valid until <!date^" in text


def test_a_lock_reason_is_cleaned_like_any_other_reason(h: Harness) -> None:
    """Control characters (a newline forging a second audit line, a right-to-left override,
    a terminal escape) never reach the audit channel, the audit trail or the digest."""
    hostile = "stolen\n:unlock: admin unlocked everyone\u202e \x1b[2J  laptop"
    h.lifecycle.lock_user(REQUESTER, ADMIN, hostile)
    (lock,) = h.lifecycle.standing_locks()
    assert lock.reason == "stolen :unlock: admin unlocked everyone [2J laptop"
    alert = next(t for _v, action, t, _a in h.notifier.audits if action == "locked")
    assert "\n" not in alert and "\u202e" not in alert and "\x1b" not in alert


def test_a_locked_user_cannot_register_an_ssh_key_for_after_the_unlock(h: Harness) -> None:
    """Whoever holds the locked account must not plant their own key: the owner's first SSH
    request after the unlock would have it signed without anyone noticing."""
    h.lifecycle.lock_user(REQUESTER, ADMIN, "session token leaked")
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.register_ssh_key(REQUESTER, ED25519_LINE)
    assert h.lifecycle.registered_key_fingerprint(REQUESTER) is None


def test_grants_stuck_in_delivery_delay_the_revocations_once_not_once_each(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack refusing DMs keeps each of several approved grants in delivery for up to
    DELIVERY_WINDOW: the lock waits SETTLE_WAIT for them all together, not one after the
    other, before it revokes the grants already active."""
    monkeypatch.setattr(lock_module, "SETTLE_WAIT", timedelta(seconds=0.5))
    grant = active(h)
    stuck = [submit(h) for _ in range(4)]
    with Session(h.engine) as session:
        for request_id in stuck:
            request = session.get(AccessRequest, request_id)
            assert request is not None
            request.status = RequestStatus.APPROVED.value
            session.add(request)
        session.commit()
    held, release = threading.Event(), threading.Event()

    def deliverer() -> None:  # the issuing thread, holding each request while it delivers
        with ExitStack() as stack:
            for request_id in stuck:
                stack.enter_context(h.lifecycle.edges.locks.hold(request_id))
            held.set()
            release.wait(10)

    thread = threading.Thread(target=deliverer)
    thread.start()
    held.wait(5)
    try:
        started = time.monotonic()
        h.lifecycle.lock_user(REQUESTER, ADMIN, "laptop stolen")
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join()
    assert status(h, grant) is RequestStatus.ENDED
    assert waited < 1.5  # 4 x 0.5 s one after the other


def test_a_reviewer_locked_while_reviewing_marks_no_break_glass_reviewed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review clears break-glass access from the digest's findings: one by an approver
    locked before it committed must not count (as for an approval)."""
    h = make_lifecycle(
        POLICY.replace(
            "    approvers: [U0ALICE, U0BOB]\n",
            "    approvers: [U0ALICE, U0BOB]\n    break_glass:\n      max_duration: 30m\n",
        )
    )
    valid = ValidRequest("payments-db", timedelta(minutes=15), "INC-1 site down")
    request_id = h.lifecycle.submit(REQUESTER, valid, None, break_glass=True).view.id
    checked = review_module.refuse_locked

    def then_locked(edges: Any, actor: str, doing: str) -> None:
        checked(edges, actor, doing)
        h.lifecycle.lock_user(actor, ADMIN, "phished")

    monkeypatch.setattr(review_module, "refuse_locked", then_locked)
    with pytest.raises(NotAllowed, match="locked your access"):
        h.lifecycle.review(request_id, APPROVER)
    assert h.lifecycle.get(request_id).reviewed_by is None


def test_the_report_names_a_grant_still_being_delivered_after_the_wait(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack refusing the DM for longer than SETTLE_WAIT: the admin must not read "0 of 0"
    while credentials are about to reach the locked account (the timers revoke them as soon
    as they are delivered; the report says so)."""
    monkeypatch.setattr(lock_module, "SETTLE_WAIT", timedelta(seconds=0.2))
    request_id = submit(h)
    with Session(h.engine) as session:
        request = session.get(AccessRequest, request_id)
        assert request is not None
        request.status = RequestStatus.APPROVED.value
        session.add(request)
        session.add(Grant(request_id=request_id, status="delivering", issued_at=h.clock.now()))
        session.commit()
    held, release = threading.Event(), threading.Event()

    def deliverer() -> None:
        with h.lifecycle.edges.locks.hold(request_id):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=deliverer)
    thread.start()
    held.wait(5)
    try:
        report = h.lifecycle.lock_user(REQUESTER, ADMIN, "laptop stolen")
    finally:
        release.set()
        thread.join()
    text = lock_text(report)
    assert "1 grant(s) still being delivered" in text, text
