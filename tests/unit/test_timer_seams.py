"""Seams between the timer tick, delivery, the request locks and the notice outbox.

Found by an adversarial review of the merge; each test failed before its fix: a tick running
at the worst moment must never fail, revoke, word or delay what a live process is doing."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlmodel import Session, select

from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus as S
from bot.lifecycle import EndReason
from bot.scheduler import OWNED_RECHECK
from bot.store import schema
from bot.store.db import make_engine
from bot.store.models import Notice, utc
from tests.unit.fakes import (
    APPROVER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    Harness,
    make_lifecycle,
)
from tests.unit.test_delivery import crash_while_delivering
from tests.unit.test_lifecycle import grant_of, submit


def notices(h: Harness) -> list[Notice]:
    with Session(h.engine) as session:
        return list(session.exec(select(Notice)))


# -- 1. The tick sends a failure notice with its provisional text, before it is reworded ------


def test_a_tick_during_the_cleanup_revocation_leaves_the_notice_to_its_writer() -> None:
    """Issue.fail commits the notice, then revokes in Vault, then rewords it and sends it. A
    tick in between (any replica, every second) used to send the first wording ("is being
    revoked") although Vault confirmed the revocation a moment later."""
    h = make_lifecycle()
    h.notifier.fail_delivery = True  # the DM is refused for the whole window; notices are fine
    real_revoke = h.issuer.revoke
    ticked: list[Any] = []

    def revoke_while_a_tick_runs(accessor: str | None, lease_id: str | None) -> None:
        if not ticked:  # another replica's (or this replica's) tick, while Vault works
            thread = threading.Thread(target=lambda: ticked.append(h.tick()))
            thread.start()
            thread.join()
        real_revoke(accessor, lease_id)

    h.issuer.revoke = revoke_while_a_tick_runs  # type: ignore[method-assign]
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.FAILED
    assert grant_of(h, request_id).status == GrantStatus.REVOKED  # Vault confirmed
    told = [t for u, t in h.notifier.tells if u == REQUESTER]
    assert len(told) == 1
    assert "revoked (Vault confirmed it)" in told[0], told[0]


# -- 2. The tick's hold is shared by every kind of due work on a row --------------------------


def test_a_row_owned_by_a_live_process_does_not_delay_its_revocation_retry() -> None:
    """While a live process delivers (up to 30 s), each tick finds the grant DELIVERING, cannot
    take the lock, and used to hold the row for a minute (the hold is one per row, shared by
    every kind of due work): once the delivery was given up and Vault was unreachable, the
    retry due in 5 s waited for that minute instead. Now a row owned elsewhere is looked at
    again in seconds."""
    h = make_lifecycle()
    request_id = crash_while_delivering(h)  # stands for a delivery still in progress
    gid = grant_of(h, request_id).id
    assert gid is not None
    holding, done = threading.Event(), threading.Event()

    def owner() -> None:  # the live process delivering
        with h.lifecycle.edges.locks.hold(request_id) as got:
            assert got
            holding.set()
            done.wait(5)

    thread = threading.Thread(target=owner)
    thread.start()
    holding.wait(5)
    h.tick()  # sees it DELIVERING, leaves it to its owner, holds the row 1 minute
    done.set()
    thread.join()
    # The owner's delivery window ends: it gives up and revokes; Vault is unreachable.
    h.issuer.fail("revoke", how="unreachable")
    view = h.lifecycle.get(request_id)
    h.lifecycle.issuing.fail(view, gid, "slack down", EndReason.DELIVERY_FAILED)
    assert grant_of(h, request_id).status == GrantStatus.REVOKING
    h.clock.advance(timedelta(seconds=6))  # Vault is back; the retry was due at +5 s
    assert h.due("revocation retry") == [gid]
    h.tick()
    assert grant_of(h, request_id).status == GrantStatus.REVOKED


# -- 3. A second approval that could not get the lock is never issued, then failed ------------

TWO = yaml.safe_load(EXAMPLE_POLICY)
TWO["resources"]["payments-db"]["approvals_required"] = 2
TWO_POLICY = yaml.safe_dump(TWO)


def test_a_completing_approval_that_waited_out_the_lock_is_failed_as_interrupted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decide used to hold the lock during the whole first (non-completing) approval, Slack
    calls included (slack_sdk may sleep through several 10 s Retry-Afters). The second
    approver's Decide gave up waiting, completed the approval without the lock, its issue gave
    up too, and the next tick failed the fully-approved request as "the bot stopped while
    issuing". Now only the completing approval takes the lock. (LOCK_WAIT shortened to 0.2 s
    to keep the test fast.)"""
    monkeypatch.setattr("bot.lifecycle.decide.LOCK_WAIT", timedelta(seconds=0.2))
    monkeypatch.setattr("bot.lifecycle.issue.LOCK_WAIT", timedelta(seconds=0.2))
    h = make_lifecycle(TWO_POLICY)
    request_id = submit(h)
    in_slack, slack_back = threading.Event(), threading.Event()

    def slow_slack_for_first_approver(name: str, args: tuple[Any, ...]) -> None:
        if threading.current_thread().name == "first-approver":
            in_slack.set()
            slack_back.wait(5)

    h.notifier.observer = slow_slack_for_first_approver
    first = threading.Thread(
        target=lambda: h.lifecycle.decide(request_id, APPROVER, approve=True),
        name="first-approver",
    )
    first.start()
    assert in_slack.wait(5)  # first approval committed, its Slack calls slow, lock held
    view = h.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)
    slack_back.set()
    first.join()
    h.notifier.observer = None
    h.clock.advance(timedelta(seconds=2))
    h.tick()
    final = h.lifecycle.get(request_id)
    assert (view.status, final.status) == (S.ACTIVE, S.ACTIVE), (view.status, final.failure)


# -- 4. A held row stays held after its work is done (shared hold, request side) -------------


def test_a_row_owned_elsewhere_is_held_for_seconds_not_a_minute() -> None:
    """Same root cause as above, on the happy path: the hold the tick put on a delivering grant
    used to outlive the delivery by a minute, blocking its expiry and collection check."""
    h = make_lifecycle()
    request_id = crash_while_delivering(h)
    gid = grant_of(h, request_id).id
    holding, done = threading.Event(), threading.Event()

    def owner() -> None:
        with h.lifecycle.edges.locks.hold(request_id) as got:
            assert got
            holding.set()
            done.wait(5)

    thread = threading.Thread(target=owner)
    thread.start()
    holding.wait(5)
    ticked_at = h.clock.now()
    h.tick()
    done.set()
    thread.join()
    with Session(h.engine) as session:
        from bot.store.models import Grant

        grant = session.get(Grant, gid)
        assert grant is not None
        held = grant.next_attempt_at
        assert held is not None and utc(held) <= ticked_at + OWNED_RECHECK


# -- 5. The tick's "revocation retry" takes the cleanup revocation from Issue.fail ------------


def test_a_tick_leaves_the_cleanup_revocation_to_fail_itself() -> None:
    """Issue.fail commits the grant REVOKING, then revokes it itself. It used to be "revocation
    retry" due at once: a tick in between took the revocation, fail()'s own end_grant found
    nothing to do, and the requester was told "is being revoked; the audit channel follows it"
    although Vault had confirmed it."""
    h = make_lifecycle()
    h.notifier.slack_down = True  # so no notice goes out: the stored (rewritten) text counts
    ending = h.lifecycle.issuing.ending
    real_end = ending.end_grant
    ticked: list[Any] = []

    started: list[bool] = []

    def tick_first(grant_id: int, reason: str, actor: str = "debug-access") -> bool:
        if not started:
            started.append(True)
            thread = threading.Thread(target=lambda: ticked.append(h.tick()))
            thread.start()
            thread.join()
        return real_end(grant_id, reason, actor)

    ending.end_grant = tick_first  # type: ignore[method-assign]
    request_id = submit(h)
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert ticked and ticked[0]["revocation retry"] == 0  # left to fail() itself
    assert grant_of(h, request_id).status == GrantStatus.REVOKED
    (notice,) = notices(h)
    assert "revoked (Vault confirmed it)" in notice.text, notice.text


def test_revoke_clicked_the_moment_the_dm_arrives_waits_for_the_grant_to_be_active(
    tmp_path: Path,
) -> None:
    """The DM goes out before the commit that makes the grant active. A Revoke click landing in
    between used to hear "Request #N is approved; there is nothing to revoke".

    On a database file, as a server has it: the approval's announcements (after the DM and the
    lock) run while the click revokes, and the in-memory database's one shared connection
    would interleave their transactions."""
    engine = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    schema.upgrade(engine)
    h = make_lifecycle(engine=engine)
    request_id = submit(h)
    revocation = h.lifecycle.early_revocation
    read_while_delivering = threading.Event()
    real_get = revocation.views.get
    first_read: list[bool] = []

    def get(rid: int) -> Any:
        view = real_get(rid)
        if threading.current_thread() is clicker and not first_read:
            first_read.append(view.status is S.APPROVED)
            read_while_delivering.set()
        return view

    revocation.views.get = get  # type: ignore[method-assign]
    outcome: list[Any] = []

    def click_revoke() -> None:
        try:
            outcome.append(h.lifecycle.revoke_early(request_id, REQUESTER))
        except Exception as exc:  # recorded, so the assert shows it
            outcome.append(exc)

    clicker = threading.Thread(target=click_revoke)

    def dm_sent(name: str, _args: tuple[Any, ...]) -> None:
        if name == "deliver_credentials" and not clicker.is_alive() and not outcome:
            clicker.start()
            assert read_while_delivering.wait(5)

    h.notifier.observer = dm_sent
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    clicker.join(10)
    assert first_read == [True]  # the click did land before the grant was active
    (result,) = outcome
    assert not isinstance(result, Exception), result
    assert grant_of(h, request_id).status == GrantStatus.REVOKED
