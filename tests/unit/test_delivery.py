"""Delivery is a step of issuing: retries within a window, then revoke and a notice that waits
for Slack; what a crash left half-issued is resolved at once, unless its owner is still at it."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session, select

from bot.domain.grants import GrantStatus
from bot.domain.requests import RequestStatus as S
from bot.domain.requests import ValidRequest
from bot.lifecycle import EndReason
from bot.lifecycle.issue import DELIVERY_WINDOW
from bot.scheduler import OWNED_RECHECK
from bot.store.locks import LocalLocks
from bot.store.models import Notice
from tests.unit.fakes import (
    APPROVER,
    REQUESTER,
    START,
    FakeClock,
    Harness,
    SimulatedCrash,
    make_lifecycle,
)
from tests.unit.test_lifecycle import actions, chain_ok, grant_of, submit


@pytest.fixture
def h() -> Harness:
    return make_lifecycle()


def notices(h: Harness) -> list[Notice]:
    with Session(h.engine) as session:
        return list(session.exec(select(Notice)))


def restart(h: Harness, after: timedelta) -> Harness:
    """The same database and Vault in a new process ``after`` later (nothing is held)."""
    clock = FakeClock(h.clock.now() + after)
    h.issuer.clock = clock
    return make_lifecycle(h.policy, engine=h.engine, clock=clock, issuer=h.issuer)


def test_delivery_rides_out_a_slack_outage_honouring_retry_after(h: Harness) -> None:
    h.notifier.delivery_failures = 3
    h.notifier.retry_after = 5
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.ACTIVE
    assert len(h.notifier.deliveries) == 4  # three refused, the fourth taken
    assert h.clock.now() - START >= timedelta(seconds=15)  # waited Retry-After each time
    assert grant_of(h, request_id).status == GrantStatus.ACTIVE
    assert actions(h, request_id) == ["requested", "approved", "issued", "delivered"]
    assert notices(h) == []
    assert chain_ok(h)


def test_undeliverable_credentials_are_revoked_and_the_requester_told_once_slack_answers(
    h: Harness,
) -> None:
    h.notifier.slack_down = True
    h.notifier.retry_after = 2
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert h.clock.now() - START <= DELIVERY_WINDOW  # gave up within the window
    assert view.status is S.FAILED
    assert view.failure is not None and "ratelimited" in view.failure
    grant = grant_of(h, request_id)
    assert (grant.status, grant.end_reason) == (GrantStatus.REVOKED, EndReason.DELIVERY_FAILED)
    assert not h.issuer.live  # Vault confirmed
    assert actions(h, request_id) == ["requested", "approved", "issued", "failed", "revoked"]
    (notice,) = notices(h)
    assert notice.user == REQUESTER and notice.sent_at is None and notice.attempts == 1
    assert "revoked (Vault confirmed it)" in notice.text
    assert REQUESTER not in dict(h.notifier.tells)

    assert h.tick()["queued notices"] == 0  # Slack still down: it waits
    h.notifier.slack_down = False
    assert h.tick()["queued notices"] == 0  # not due yet (backoff)
    h.clock.advance(timedelta(seconds=5))
    assert h.tick()["queued notices"] == 1
    told = dict(h.notifier.tells)[REQUESTER]
    assert f"request #{request_id}" in told and "could not be delivered" in told
    h.clock.advance(timedelta(minutes=5))
    assert h.tick()["queued notices"] == 0  # sent once
    assert len([t for u, t in h.notifier.tells if u == REQUESTER]) == 1


def crash_while_delivering(h: Harness) -> int:
    def observer(name: str, args: tuple[Any, ...]) -> None:
        if name == "deliver_credentials":
            raise SimulatedCrash("killed before the DM went out")

    h.notifier.observer = observer
    request_id = submit(h)
    with pytest.raises(SimulatedCrash):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    h.notifier.observer = None
    assert grant_of(h, request_id).status == GrantStatus.DELIVERING
    assert h.issuer.live  # a live lease nobody has
    return request_id


def test_a_grant_left_delivering_by_a_crash_is_revoked_at_start_at_once(h: Harness) -> None:
    request_id = crash_while_delivering(h)
    r = restart(h, timedelta(seconds=1))  # no timeout to wait for: its owner is gone
    assert r.tick()["interrupted issue"] == 1
    view = r.lifecycle.get(request_id)
    assert view.status is S.FAILED and view.failure is not None
    grant = grant_of(r, request_id)
    assert (grant.status, grant.end_reason) == (GrantStatus.REVOKED, EndReason.DELIVERY_FAILED)
    assert not r.issuer.live
    told = dict(r.notifier.tells)[REQUESTER]
    assert "could not be delivered" in told and "revoked" in told
    assert r.tick() == {}
    assert chain_ok(r)


def test_an_approved_request_left_by_a_crash_fails_at_start_at_once(h: Harness) -> None:
    h.issuer.crash("create")
    request_id = submit(h)
    with pytest.raises(SimulatedCrash):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    r = restart(h, timedelta(seconds=1))
    assert r.tick()["interrupted approval"] == 1
    assert r.lifecycle.get(request_id).status is S.FAILED


def test_work_whose_owner_is_alive_is_left_alone(h: Harness) -> None:
    request_id = crash_while_delivering(h)  # stands in for a delivery still running
    assert isinstance(h.lifecycle.edges.locks, LocalLocks)
    holding, done = threading.Event(), threading.Event()

    def owner() -> None:
        with h.lifecycle.edges.locks.hold(request_id) as got:
            assert got
            holding.set()
            done.wait(5)

    thread = threading.Thread(target=owner)
    thread.start()
    holding.wait(5)
    h.tick()  # finds it due, cannot take the lock: leaves it to its owner
    assert grant_of(h, request_id).status == GrantStatus.DELIVERING
    assert h.lifecycle.get(request_id).status is S.APPROVED
    done.set()
    thread.join()
    h.clock.advance(OWNED_RECHECK)  # looked at again in a moment, not held for a minute
    assert h.tick()["interrupted issue"] == 1  # the owner let go
    assert grant_of(h, request_id).status == GrantStatus.REVOKED


def test_a_grant_that_ended_before_delivery_fails_its_request(h: Harness) -> None:
    request_id = crash_while_delivering(h)
    gid = grant_of(h, request_id).id
    assert gid is not None
    h.lifecycle.end_grant(gid, EndReason.EXPIRED)  # its expiry came first
    assert h.lifecycle.get(request_id).status is S.APPROVED
    assert h.tick()["interrupted approval"] == 1
    assert h.lifecycle.get(request_id).status is S.FAILED
    assert actions(h, request_id)[-1] == "failed"
    assert chain_ok(h)


@pytest.mark.parametrize(
    ("status", "retry_after", "retried"),
    [
        (429, "2", True),
        (429, "10", True),
        (429, "60", False),
        (429, "soon", False),
        (500, "", False),
    ],
)
def test_slack_sdk_sleeps_only_through_a_short_retry_after(
    status: int, retry_after: str, retried: bool
) -> None:
    """A long Retry-After surfaces to the caller (the delivery waits for it within its window)
    instead of being slept through three times inside one call."""
    from slack_sdk.http_retry.request import HttpRequest
    from slack_sdk.http_retry.response import HttpResponse
    from slack_sdk.http_retry.state import RetryState

    from bot.slack.app import BoundedRateLimitRetryHandler

    handler = BoundedRateLimitRetryHandler(max_retry_count=3)
    request = HttpRequest(method="POST", url="https://slack.test/api/chat.postMessage", headers={})
    headers = {"Retry-After": retry_after} if retry_after else {}
    response = HttpResponse(status_code=status, headers=headers)
    assert handler.can_retry(state=RetryState(), request=request, response=response) is retried


def test_the_credentials_dm_is_the_first_slack_call_after_the_completing_click() -> None:
    """Approve -> credentials DM is Vault's work and one Slack post: the approval message
    update and the "approved" / "issued" audit posts wait until the DM has gone, and each
    copy of the approval message is updated once, to its final state."""
    h = make_lifecycle()
    valid = ValidRequest("payments-db", timedelta(minutes=30), "INC-1 ordering")
    request_id = h.lifecycle.submit(REQUESTER, valid, None).view.id
    before = len(h.notifier.calls)
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    after = [name for name, _ in h.notifier.calls[before:]]
    assert after[0] == "deliver_credentials", after
    assert after.count("refresh_request") == 1
    (refreshed,) = h.notifier.of("refresh_request")
    assert refreshed[0].status.value == "active"
    actions = [action for _, action, _, _ in h.notifier.audits]
    assert actions[-2:] == ["approved", "issued"]
