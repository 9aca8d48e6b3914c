"""Approval rules through the lifecycle (fakes for Vault, Slack and the clock; SQLite; the real
timer tick): N approvals, routing and escalation through an approver directory, unanswered
requests expiring, who may ask, break-glass, extensions, and what the timers do with all of it,
after a restart too."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, col, select

from bot.audit import verify_chain
from bot.domain.durations import DurationError
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.requests import RequestStatus, ValidRequest
from bot.lifecycle import SYSTEM_ACTOR, AccessLifecycle
from bot.lifecycle.escalate import ESCALATION_EXHAUSTED
from bot.ports import ApproverDirectory, ApproverTier
from bot.store.db import create_schema, make_engine
from bot.store.models import AccessRequest, AuditEvent, Decision, Grant, GrantStatus, utc
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    START,
    FakeClock,
    Harness,
    SimulatedCrash,
    make_lifecycle,
    race,
)

S = RequestStatus
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
THIRD_APPROVER = "U0DAVE"
LEAD = "U0ERIN"
REASON = "INC-4211 checkout errors"


def policy_text(**payments_db: Any) -> str:
    """The example policy with extra keys on ``payments-db``."""
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["resources"]["payments-db"].update(payments_db)
    return yaml.safe_dump(raw)


@dataclass
class FakeDirectory:
    """``ApproverDirectory`` from plain data: tiers in order, who may approve, group members."""

    tier_users: list[tuple[str, tuple[str, ...], str | None]]  # (source, users, note)
    approvers: set[str]
    groups: dict[str, set[str]] = field(default_factory=dict)
    group_calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    trusts_requester: bool = False  # a careless directory that says yes to the requester too

    def tiers(self, entries: Sequence[str], requester: str, now: datetime) -> list[ApproverTier]:
        return [
            ApproverTier(source, tuple(u for u in users if u != requester), note)
            for source, users, note in self.tier_users
        ]

    def may_approve(self, user: str, entries: Sequence[str], requester: str, now: datetime) -> bool:
        return (self.trusts_requester or user != requester) and user in self.approvers

    def in_any_group(self, user: str, groups: Sequence[str]) -> bool:
        self.group_calls.append((user, tuple(groups)))
        return any(user in self.groups.get(group, set()) for group in groups)


def three_tiers() -> FakeDirectory:
    return FakeDirectory(
        tier_users=[
            ("primary", (APPROVER,), None),
            ("secondary", (APPROVER, OTHER_APPROVER), None),
            ("leads", (LEAD,), None),
        ],
        approvers={APPROVER, OTHER_APPROVER, LEAD},
    )


def harness(
    policy: str = EXAMPLE_POLICY, directory: ApproverDirectory | None = None, **kwargs: Any
) -> Harness:
    h = make_lifecycle(policy, **kwargs)
    if directory is None:
        return h
    lifecycle = AccessLifecycle(
        engine=h.engine,
        policy=h.policy,
        issuer=h.issuer,
        notifier=h.notifier,
        clock=h.clock,
        approvers=directory,
    )
    return replace(h, lifecycle=lifecycle)


def submit(
    h: Harness,
    requester: str = REQUESTER,
    duration: timedelta = HOUR,
    resource: str = "payments-db",
    break_glass: bool = False,
) -> int:
    result = h.lifecycle.submit(
        requester, ValidRequest(resource, duration, REASON), "C0ORIGIN", break_glass=break_glass
    )
    return result.view.id


def rows(engine: Engine, model: type[SQLModel]) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model)))


def snapshot(h: Harness) -> dict[str, list[tuple[Any, ...]]]:
    with h.engine.connect() as conn:
        return {
            table.name: [tuple(r) for r in conn.execute(table.select())]
            for table in SQLModel.metadata.sorted_tables
        }


def events(h: Harness, request_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(action, actor, details) of a request's audit rows, in order."""
    with Session(h.engine) as session:
        found = session.exec(
            select(AuditEvent)
            .where(AuditEvent.request_id == request_id)
            .order_by(col(AuditEvent.id))
        )
        return [(e.action, e.actor, json.loads(e.details)) for e in found]


def actions(h: Harness, request_id: int) -> list[str]:
    return [action for action, _, _ in events(h, request_id)]


def grant_of(h: Harness, request_id: int) -> Grant:
    with Session(h.engine) as session:
        return session.exec(select(Grant).where(Grant.request_id == request_id)).one()


def waiting(h: Harness, request_id: int) -> bool:
    """Whether the request is ever due to expire or escalate (only while it waits)."""
    later = START + 365 * 24 * HOUR
    return request_id in h.due("pending expiry", later) + h.due("escalation", later)


def chain_ok(h: Harness) -> bool:
    with Session(h.engine) as session:
        return verify_chain(session).ok


def posted(h: Harness) -> list[tuple[str, str, bool]]:
    """(action, text, alert) of every audit-channel post."""
    return [(action, text, alert) for _, action, text, alert in h.notifier.audits]


def restart(h: Harness, now: datetime, directory: ApproverDirectory | None = None) -> Harness:
    """The same database and Vault after a restart: a fresh lifecycle, notifier and clock."""
    clock = FakeClock(now)
    h.issuer.clock = clock
    return harness(h.policy, directory, engine=h.engine, clock=clock, issuer=h.issuer)


# -- approvals_required = 2 ------------------------------------------------------------------------

TWO = policy_text(approvers=[APPROVER, OTHER_APPROVER, THIRD_APPROVER], approvals_required=2)


@pytest.fixture
def two() -> Harness:
    return harness(TWO)


def test_first_of_two_approvals_keeps_the_request_pending(two: Harness) -> None:
    request_id = submit(two)
    two.clock.advance(MINUTE)
    view = two.lifecycle.decide(request_id, APPROVER, approve=True)

    assert view.status is S.PENDING
    assert (view.approved_by, view.approvals_required) == ((APPROVER,), 2)
    assert view.decided_by is None and view.decided_at is None
    (decision,) = rows(two.engine, Decision)
    assert (decision.request_id, decision.approver, decision.verdict) == (
        request_id,
        APPROVER,
        "approve",
    )
    assert utc(decision.decided_at) == START + MINUTE
    assert events(two, request_id)[-1] == ("approved", APPROVER, {"progress": "1 of 2 approvals"})
    assert posted(two)[-1] == ("approved", f"approved by <@{APPROVER}> (1 of 2 approvals)", False)
    assert two.issuer.calls == []
    assert rows(two.engine, Grant) == []
    assert two.notifier.deliveries == []
    assert two.becomes_due("pending expiry", request_id, START + HOUR)  # still waiting
    ((refreshed, _),) = two.notifier.of("refresh_request")
    assert refreshed.status is S.PENDING and refreshed.approved_by == (APPROVER,)
    # Still waiting for the others, not for the one who approved.
    assert [v.id for v in two.lifecycle.waiting_for(OTHER_APPROVER)] == [request_id]
    assert two.lifecycle.waiting_for(APPROVER) == []
    assert chain_ok(two)


@pytest.mark.parametrize("approve", [True, False])
def test_the_same_approver_again_conflicts_and_changes_nothing(two: Harness, approve: bool) -> None:
    request_id = submit(two)
    two.lifecycle.decide(request_id, APPROVER, approve=True)
    before, calls_before = snapshot(two), len(two.notifier.calls)
    two.clock.advance(MINUTE)
    with pytest.raises(Conflict, match="already"):
        two.lifecycle.decide(request_id, APPROVER, approve=approve)
    assert snapshot(two) == before
    assert len(two.notifier.calls) == calls_before
    assert two.issuer.calls == []
    assert two.lifecycle.get(request_id).status is S.PENDING


def test_second_approver_completes_and_issues_once(two: Harness) -> None:
    request_id = submit(two)
    two.lifecycle.decide(request_id, APPROVER, approve=True)
    two.clock.advance(2 * MINUTE)
    view = two.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)

    assert view.status is S.ACTIVE
    assert (view.decided_by, view.decided_at) == (OTHER_APPROVER, START + 2 * MINUTE)
    assert view.approved_by == (APPROVER, OTHER_APPROVER)
    assert two.issuer.count("create") == 1
    assert not waiting(two, request_id)
    grant = grant_of(two, request_id)
    assert grant.status == GrantStatus.ACTIVE
    assert two.becomes_due("grant expiry", grant.id, START + 2 * MINUTE + HOUR)
    assert actions(two, request_id) == ["requested", "approved", "approved", "issued", "delivered"]
    assert events(two, request_id)[2] == (
        "approved",
        OTHER_APPROVER,
        {"progress": "2 of 2 approvals"},
    )
    assert len(two.notifier.deliveries) == 1
    # A third approver comes too late.
    with pytest.raises(Conflict, match=f"decided by <@{OTHER_APPROVER}>"):
        two.lifecycle.decide(request_id, THIRD_APPROVER, approve=True)
    assert two.issuer.count("create") == 1
    assert len(rows(two.engine, Decision)) == 2
    assert chain_ok(two)


def test_deny_after_one_approval_ends_it(two: Harness) -> None:
    request_id = submit(two)
    two.lifecycle.decide(request_id, APPROVER, approve=True)
    view = two.lifecycle.decide(request_id, OTHER_APPROVER, approve=False)
    assert view.status is S.DENIED and view.decided_by == OTHER_APPROVER
    assert two.issuer.calls == []
    assert rows(two.engine, Grant) == []
    assert not waiting(two, request_id)
    assert sorted((d.approver, d.verdict) for d in rows(two.engine, Decision)) == [
        (APPROVER, "approve"),
        (OTHER_APPROVER, "deny"),
    ]
    assert actions(two, request_id) == ["requested", "approved", "denied"]
    ((user, text),) = two.notifier.tells
    assert user == REQUESTER and "denied" in text
    with pytest.raises(Conflict):
        two.lifecycle.decide(request_id, THIRD_APPROVER, approve=True)
    assert two.issuer.calls == []


def test_a_single_approval_request_needs_no_progress() -> None:
    h = harness()
    request_id = submit(h)
    view = h.lifecycle.decide(request_id, APPROVER, approve=True)
    assert view.status is S.ACTIVE
    assert events(h, request_id)[1] == ("approved", APPROVER, {})
    assert ("approved", f"approved by <@{APPROVER}>", False) in posted(h)


# -- routing through the approver directory --------------------------------------------------------

ROUTED = policy_text(escalate_after="10m", pending_ttl="1h")


@pytest.fixture
def routed() -> tuple[Harness, FakeDirectory]:
    directory = three_tiers()
    return harness(ROUTED, directory), directory


def test_submit_asks_the_primary_tier_and_both_timers_follow(
    routed: tuple[Harness, FakeDirectory],
) -> None:
    h, _ = routed
    result = h.lifecycle.submit(REQUESTER, ValidRequest("payments-db", HOUR, REASON), None)
    request_id = result.view.id
    assert result.asked == (APPROVER,)
    ((view, users, in_channel),) = h.notifier.of("announce_request")
    assert (view.id, users, in_channel) == (request_id, (APPROVER,), True)
    assert view.approvers == (APPROVER,) and view.pending_until == START + HOUR
    assert h.becomes_due("pending expiry", request_id, START + HOUR)
    assert h.becomes_due("escalation", request_id, START + 10 * MINUTE)
    assert events(h, request_id)[0][2]["asked"] == [APPROVER]


@pytest.mark.parametrize(
    ("policy", "tiers"),
    [
        (EXAMPLE_POLICY, 3),  # no escalate_after: nobody is asked later
        (ROUTED, 1),  # one tier: nowhere to escalate to
    ],
)
def test_no_escalation_without_a_path(policy: str, tiers: int) -> None:
    directory = three_tiers()
    directory.tier_users = directory.tier_users[:tiers]
    h = harness(policy, directory)
    request_id = submit(h)
    h.clock.advance(30 * MINUTE)
    h.tick()  # with one tier, escalation is due but finds nobody more to ask
    assert "escalated" not in actions(h, request_id)
    assert len(h.notifier.of("announce_request")) == 1
    assert h.due("escalation", START + HOUR - timedelta(seconds=1)) == []
    assert h.becomes_due("pending expiry", request_id, START + HOUR)


def test_an_empty_tier_is_skipped_and_its_note_kept() -> None:
    directory = FakeDirectory(
        tier_users=[
            ("pagerduty", (), "PagerDuty unreachable; using the static list"),
            ("policy", (OTHER_APPROVER,), None),
        ],
        approvers={OTHER_APPROVER},
    )
    h = harness(ROUTED, directory)
    result = h.lifecycle.submit(REQUESTER, ValidRequest("payments-db", HOUR, REASON), None)
    assert result.asked == (OTHER_APPROVER,)
    assert result.view.routing_note == "PagerDuty unreachable; using the static list"
    h.clock.advance(30 * MINUTE)
    h.tick()
    assert "escalated" not in actions(h, result.view.id)  # only one staffed tier
    assert h.due("escalation", START + HOUR - timedelta(seconds=1)) == []


def test_nobody_staffed_refuses_the_request() -> None:
    directory = FakeDirectory(
        tier_users=[("pagerduty", (REQUESTER,), "nobody else on call")], approvers=set()
    )
    h = harness(ROUTED, directory)
    with pytest.raises(NotAllowed, match="nobody else on call"):
        submit(h)
    assert rows(h.engine, AccessRequest) == []
    assert h.due("pending expiry", START + 2 * HOUR) == []


def test_escalate_asks_the_next_tier_only(routed: tuple[Harness, FakeDirectory]) -> None:
    h, _ = routed
    request_id = submit(h)
    h.clock.advance(10 * MINUTE)
    assert h.lifecycle.escalate(request_id) is True

    view = h.lifecycle.get(request_id)
    assert view.escalation_level == 1
    assert view.approvers == (APPROVER, OTHER_APPROVER)
    assert view.routing_note is not None and "escalated to <@U0BOB>" in view.routing_note
    _, (escalated, users, in_channel) = h.notifier.of("announce_request")
    assert (escalated.id, users, in_channel) == (request_id, (OTHER_APPROVER,), False)
    assert events(h, request_id)[-1] == (
        "escalated",
        SYSTEM_ACTOR,
        {"level": 1, "asked": [OTHER_APPROVER], "source": "secondary"},
    )
    assert posted(h)[-1][0] == "escalated" and "<@U0BOB>" in posted(h)[-1][1]
    assert h.becomes_due("escalation", request_id, START + 20 * MINUTE)  # leads are next
    assert h.notifier.of("refresh_request")[-1][0].escalation_level == 1

    h.clock.advance(10 * MINUTE)
    assert h.lifecycle.escalate(request_id) is True
    _, _, (_, users, in_channel) = h.notifier.of("announce_request")
    assert (users, in_channel) == ((LEAD,), False)
    assert h.lifecycle.get(request_id).approvers == (APPROVER, OTHER_APPROVER, LEAD)
    # Due once more, to find that no tier is left after the leads.
    assert h.becomes_due("escalation", request_id, START + 30 * MINUTE)

    calls_before = len(h.notifier.calls)
    events_before = events(h, request_id)
    assert h.lifecycle.escalate(request_id) is False
    # Nobody is asked or told; only the request is marked as having no tier left, so the
    # timers stop asking the sources again.
    assert len(h.notifier.calls) == calls_before and events(h, request_id) == events_before
    assert h.lifecycle.get(request_id).escalation_level == ESCALATION_EXHAUSTED
    assert h.due("escalation", START + 2 * HOUR) == []
    assert h.lifecycle.escalate(request_id) is False
    assert chain_ok(h)


def test_escalation_with_two_tiers_happens_once() -> None:
    directory = three_tiers()
    directory.tier_users = directory.tier_users[:2]
    h = harness(ROUTED, directory)
    request_id = submit(h)
    assert h.lifecycle.escalate(request_id) is True
    assert h.lifecycle.get(request_id).escalation_level == 1
    assert h.lifecycle.escalate(request_id) is False
    assert h.lifecycle.get(request_id).escalation_level == ESCALATION_EXHAUSTED
    assert actions(h, request_id).count("escalated") == 1


def test_an_escalated_approver_may_decide(routed: tuple[Harness, FakeDirectory]) -> None:
    h, _ = routed
    request_id = submit(h)
    h.lifecycle.escalate(request_id)
    view = h.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)
    assert view.status is S.ACTIVE and view.decided_by == OTHER_APPROVER
    assert not waiting(h, request_id)
    assert h.lifecycle.escalate(request_id) is False  # a decided request never escalates


@pytest.mark.parametrize("actor", [BYSTANDER, REQUESTER])
def test_the_directory_decides_who_may_approve(
    routed: tuple[Harness, FakeDirectory], actor: str
) -> None:
    h, directory = routed
    directory.approvers.add(REQUESTER)  # even when listed, never for one's own request
    request_id = submit(h)
    with pytest.raises(NotAllowed):
        h.lifecycle.decide(request_id, actor, approve=True)
    assert h.lifecycle.get(request_id).status is S.PENDING


# -- pending requests expiring unanswered ----------------------------------------------------------


def test_expire_pending_before_its_time_does_nothing(routed: tuple[Harness, FakeDirectory]) -> None:
    h, _ = routed
    request_id = submit(h)
    h.clock.advance(HOUR - timedelta(seconds=1))
    before, calls_before = snapshot(h), len(h.notifier.calls)
    assert h.lifecycle.expire_pending(request_id) is False
    assert snapshot(h) == before and len(h.notifier.calls) == calls_before


@pytest.mark.parametrize("late", [timedelta(0), MINUTE, 5 * HOUR])
def test_expire_pending_after_its_time(
    routed: tuple[Harness, FakeDirectory], late: timedelta
) -> None:
    h, _ = routed
    request_id = submit(h)
    h.clock.advance(HOUR + late)
    assert h.lifecycle.expire_pending(request_id) is True

    view = h.lifecycle.get(request_id)
    assert view.status is S.EXPIRED
    assert h.issuer.calls == []
    ((user, text),) = h.notifier.tells
    assert user == REQUESTER and "expired before anyone decided" in text
    ((refreshed, refs),) = h.notifier.of("refresh_request")
    assert refreshed.status is S.EXPIRED
    assert {r.channel for r in refs} == {"C0APPROVALS", f"D-{APPROVER}"}
    assert events(h, request_id)[-1] == ("request_expired", SYSTEM_ACTOR, {})
    assert posted(h)[-1] == ("request_expired", "expired unanswered", False)

    assert h.lifecycle.expire_pending(request_id) is False
    assert h.lifecycle.escalate(request_id) is False
    with pytest.raises(Conflict, match="expired unanswered"):
        h.lifecycle.decide(request_id, APPROVER, approve=True)
    with pytest.raises(Conflict):
        h.lifecycle.revoke_early(request_id, REQUESTER)
    assert h.issuer.calls == []
    assert S.EXPIRED.is_open is False
    assert h.lifecycle.open_requests_of(REQUESTER) == []
    assert chain_ok(h)


@pytest.mark.parametrize("decide", ["approve", "deny", "withdraw"])
def test_a_decided_request_does_not_expire(decide: str) -> None:
    h = harness(ROUTED)
    request_id = submit(h)
    if decide == "withdraw":
        h.lifecycle.revoke_early(request_id, REQUESTER)
    else:
        h.lifecycle.decide(request_id, APPROVER, approve=decide == "approve")
    assert not waiting(h, request_id)
    h.clock.advance(2 * HOUR)
    status = h.lifecycle.get(request_id).status
    assert h.lifecycle.expire_pending(request_id) is False
    assert h.lifecycle.get(request_id).status is status


@pytest.mark.parametrize("approve", [True, False])
def test_a_decision_after_pending_until_expires_the_request(approve: bool) -> None:
    """No tick took the expiry up yet: the click itself must not let the request through."""
    h = harness(ROUTED)
    request_id = submit(h)
    h.clock.advance(HOUR)
    with pytest.raises(Conflict, match="waited too long and has expired"):
        h.lifecycle.decide(request_id, APPROVER, approve=approve)
    assert h.lifecycle.get(request_id).status is S.EXPIRED
    assert rows(h.engine, Decision) == []
    assert h.issuer.calls == []
    assert actions(h, request_id) == ["requested", "request_expired"]


def test_the_last_approval_after_pending_until_issues_nothing(two: Harness) -> None:
    request_id = submit(two)
    two.lifecycle.decide(request_id, APPROVER, approve=True)
    two.clock.advance(HOUR)
    with pytest.raises(Conflict, match="expired"):
        two.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)
    assert two.lifecycle.get(request_id).status is S.EXPIRED
    assert two.issuer.calls == []
    assert len(rows(two.engine, Decision)) == 1


def test_a_decision_just_before_pending_until_counts(routed: tuple[Harness, FakeDirectory]) -> None:
    h, _ = routed
    request_id = submit(h)
    h.clock.advance(HOUR - timedelta(seconds=1))
    assert h.lifecycle.decide(request_id, APPROVER, approve=True).status is S.ACTIVE


# -- who may ask: requesters -----------------------------------------------------------------------

LIMITED = policy_text(requesters=[REQUESTER, "S0SRE"])


@pytest.mark.parametrize(
    ("user", "allowed"),
    [(REQUESTER, True), (THIRD_APPROVER, True), (BYSTANDER, False)],
)
@pytest.mark.parametrize("break_glass", [False, True])
def test_requesters_are_enforced_through_the_directory(
    user: str, allowed: bool, break_glass: bool
) -> None:
    directory = FakeDirectory(
        tier_users=[("policy", (APPROVER, OTHER_APPROVER), None)],
        approvers={APPROVER, OTHER_APPROVER},
        groups={"S0SRE": {THIRD_APPROVER}},
    )
    glass = policy_text(requesters=[REQUESTER, "S0SRE"], break_glass={"max_duration": "30m"})
    h = harness(glass if break_glass else LIMITED, directory)
    if allowed:
        submit(h, requester=user, duration=30 * MINUTE, break_glass=break_glass)
        assert len(rows(h.engine, AccessRequest)) == 1
    else:
        with pytest.raises(NotAllowed, match="requesters"):
            submit(h, requester=user, duration=30 * MINUTE, break_glass=break_glass)
        assert rows(h.engine, AccessRequest) == []
        assert rows(h.engine, AuditEvent) == []
        assert h.notifier.calls == [] and h.issuer.calls == []
    # The group lookup is asked about group ids only, never the listed user ids.
    assert {groups for _, groups in directory.group_calls} <= {("S0SRE",)}
    if user != REQUESTER:
        assert directory.group_calls == [(user, ("S0SRE",))]


def test_other_resources_stay_open_to_everyone() -> None:
    h = harness(LIMITED)
    submit(h, requester=BYSTANDER, resource="orders-logs")
    assert len(rows(h.engine, AccessRequest)) == 1


def test_static_approvers_know_no_group_members() -> None:
    h = harness(LIMITED)
    with pytest.raises(NotAllowed):
        submit(h, requester=THIRD_APPROVER)
    submit(h, requester=REQUESTER)


# -- break-glass -----------------------------------------------------------------------------------

GLASS = policy_text(break_glass={"max_duration": "30m"})


@pytest.fixture
def glass() -> Harness:
    return harness(GLASS)


def test_break_glass_issues_at_once_and_alerts(glass: Harness) -> None:
    result = glass.lifecycle.submit(
        REQUESTER, ValidRequest("payments-db", 30 * MINUTE, REASON), "C0ORIGIN", break_glass=True
    )
    view = result.view
    assert view.status is S.ACTIVE and view.break_glass
    assert (view.decided_by, view.decided_at) == (REQUESTER, START)
    assert view.label == f"Break-glass access #{view.id}"
    assert glass.issuer.count("create") == 1
    assert view.expires_at == START + 30 * MINUTE
    assert result.asked == (APPROVER, OTHER_APPROVER)
    ((announced, users, in_channel),) = glass.notifier.of("announce_request")
    assert (announced.break_glass, users, in_channel) == (True, (APPROVER, OTHER_APPROVER), True)
    assert actions(glass, view.id) == ["break_glass", "issued", "delivered"]
    first = events(glass, view.id)[0]
    assert first[:2] == ("break_glass", REQUESTER) and first[2]["duration"] == "30m"
    action, text, alert = posted(glass)[0]
    assert (action, alert) == ("break_glass", True) and "BREAK-GLASS" in text
    assert [a for a, _, _ in posted(glass)] == ["break_glass", "issued"]
    assert rows(glass.engine, Decision) == []
    assert not waiting(glass, view.id)
    assert len(glass.notifier.deliveries) == 1
    (request,) = rows(glass.engine, AccessRequest)
    assert request.break_glass is True and request.reviewed_by is None
    assert chain_ok(glass)


def test_a_tick_during_a_break_glass_submission_leaves_it_to_its_owner(glass: Harness) -> None:
    """Between the commit (APPROVED, no grant yet) and the issue, a timer tick on another thread
    sees an approved request with no grant: it must find it owned, not fail it as a crash's
    leftover. The submission takes the request's lock before it commits."""
    ticks: list[Any] = []

    def tick_meanwhile(name: str, _args: tuple[Any, ...]) -> None:
        if name == "announce_request":  # after the commit, before the issue
            thread = threading.Thread(target=lambda: ticks.append(glass.tick()))
            thread.start()
            thread.join(10)

    glass.notifier.observer = tick_meanwhile
    result = glass.lifecycle.submit(
        REQUESTER, ValidRequest("payments-db", 30 * MINUTE, REASON), "C0ORIGIN", break_glass=True
    )
    assert len(ticks) == 1  # the tick ran, and found the request due but owned
    assert result.view.status is S.ACTIVE
    assert glass.issuer.count("create") == 1


@pytest.mark.parametrize(
    ("policy", "resource", "duration", "error", "match"),
    [
        (GLASS, "payments-db", 31 * MINUTE, DurationError, "lasts at most 30m"),
        (GLASS, "orders-logs", 30 * MINUTE, UserError, "has no break-glass access"),
        (EXAMPLE_POLICY, "payments-db", 30 * MINUTE, UserError, "has no break-glass access"),
    ],
)
def test_break_glass_refused(
    policy: str, resource: str, duration: timedelta, error: type[Exception], match: str
) -> None:
    h = harness(policy)
    with pytest.raises(error, match=match):
        submit(h, resource=resource, duration=duration, break_glass=True)
    assert rows(h.engine, AccessRequest) == []
    assert h.issuer.calls == [] and h.notifier.calls == []


def break_glass_race(h: Harness, count: int = 6) -> list[Any]:
    """``count`` break-glass requests by one person for one resource, at the same moment."""
    return race(
        count,
        lambda i: (
            h.lifecycle.submit(
                REQUESTER,
                ValidRequest("payments-db", 30 * MINUTE, f"{REASON} (try {i})"),
                "C0ORIGIN",
                break_glass=True,
            ).view.status
        ),
    )


def assert_one_break_glass(h: Harness, outcomes: list[Any]) -> None:
    """Exactly one of the racing requests got access; the others were told why, and left no
    row, no grant, no Vault call and no announcement behind."""
    assert outcomes.count(S.ACTIVE) == 1, outcomes
    refused = [o for o in outcomes if o is not S.ACTIVE]
    assert all(isinstance(o, Conflict) for o in refused), refused
    assert all("still open or awaiting review" in str(o) for o in refused), refused
    (request,) = rows(h.engine, AccessRequest)
    assert request.break_glass and request.status == S.ACTIVE.value
    assert len(rows(h.engine, Grant)) == 1
    assert h.issuer.count("create") == 1
    assert len(h.notifier.of("announce_request")) == 1
    assert chain_ok(h)


@pytest.mark.parametrize("attempt", range(3))
def test_concurrent_break_glass_requests_get_one_grant_on_sqlite(
    tmp_path: Path, attempt: int
) -> None:
    """Six clicks at once on a file-backed SQLite database (several connections, real
    locking): the one-at-a-time rule holds under the write lock, not by luck."""
    engine = make_engine(f"sqlite:///{tmp_path}/glass.db")
    create_schema(engine)
    h = harness(GLASS, engine=engine)
    assert_one_break_glass(h, break_glass_race(h))
    engine.dispose()


@pytest.mark.parametrize("actor", [REQUESTER, BYSTANDER])
def test_only_an_approver_reviews_break_glass(glass: Harness, actor: str) -> None:
    request_id = submit(glass, duration=30 * MINUTE, break_glass=True)
    before = snapshot(glass)
    with pytest.raises(NotAllowed, match="Only an approver"):
        glass.lifecycle.review(request_id, actor)
    assert snapshot(glass) == before


@pytest.mark.parametrize("second", [APPROVER, OTHER_APPROVER])
def test_review_records_who_and_when_once(glass: Harness, second: str) -> None:
    request_id = submit(glass, duration=30 * MINUTE, break_glass=True)
    glass.clock.advance(5 * MINUTE)
    view = glass.lifecycle.review(request_id, APPROVER)
    assert (view.reviewed_by, view.reviewed_at) == (APPROVER, START + 5 * MINUTE)
    assert view.status is S.ACTIVE
    assert actions(glass, request_id)[-1] == "reviewed"
    assert events(glass, request_id)[-1][1] == APPROVER
    assert posted(glass)[-1] == ("reviewed", f"break-glass reviewed by <@{APPROVER}>", False)
    assert glass.notifier.of("refresh_request")[-1][0].reviewed_by == APPROVER

    before = snapshot(glass)
    glass.clock.advance(MINUTE)
    with pytest.raises(Conflict, match=f"Already reviewed by <@{APPROVER}>"):
        glass.lifecycle.review(request_id, second)
    assert snapshot(glass) == before
    assert chain_ok(glass)


@pytest.mark.parametrize("approve", [None, True, False])
def test_the_requester_never_acts_on_their_own_even_if_the_directory_says_so(
    approve: bool | None,
) -> None:
    directory = FakeDirectory(
        tier_users=[("policy", (APPROVER,), None)],
        approvers={APPROVER, REQUESTER},
        trusts_requester=True,
    )
    h = harness(GLASS, directory)
    if approve is None:  # reviewing one's own break-glass
        request_id = submit(h, duration=30 * MINUTE, break_glass=True)
        with pytest.raises(NotAllowed):
            h.lifecycle.review(request_id, REQUESTER)
        assert h.lifecycle.get(request_id).reviewed_by is None
    else:
        request_id = submit(h)
        with pytest.raises(NotAllowed, match="your own request"):
            h.lifecycle.decide(request_id, REQUESTER, approve=approve)
        assert h.lifecycle.get(request_id).status is S.PENDING


def test_review_of_a_normal_request_is_a_conflict(glass: Harness) -> None:
    request_id = submit(glass)
    with pytest.raises(Conflict, match="not break-glass"):
        glass.lifecycle.review(request_id, APPROVER)


@pytest.mark.parametrize("approve", [True, False])
def test_decide_on_break_glass_is_a_conflict(glass: Harness, approve: bool) -> None:
    request_id = submit(glass, duration=30 * MINUTE, break_glass=True)
    before = snapshot(glass)
    with pytest.raises(Conflict, match="Break-glass access needs no approval"):
        glass.lifecycle.decide(request_id, APPROVER, approve=approve)
    assert snapshot(glass) == before
    assert glass.issuer.count("create") == 1


def _glass_for(h: Harness) -> int:
    return submit(h, duration=30 * MINUTE, break_glass=True)


@pytest.mark.parametrize(
    ("ended", "reviewed", "allowed"),
    [
        (False, False, False),  # still open, unreviewed
        (False, True, False),  # reviewed but still open
        (True, False, False),  # over, but nobody looked at it yet
        (True, True, True),  # over and reviewed: a new emergency may be declared
    ],
)
def test_one_break_glass_at_a_time(
    glass: Harness, ended: bool, reviewed: bool, allowed: bool
) -> None:
    first = _glass_for(glass)
    if reviewed:
        glass.lifecycle.review(first, APPROVER)
    if ended:
        glass.lifecycle.revoke_early(first, REQUESTER)
    if allowed:
        second = _glass_for(glass)
        assert glass.lifecycle.get(second).status is S.ACTIVE
        assert glass.issuer.count("create") == 2
    else:
        with pytest.raises(
            Conflict,
            match=f"break-glass access #{first} to `payments-db` is still open or awaiting review",
        ):
            _glass_for(glass)
        assert glass.issuer.count("create") == 1
        assert len(rows(glass.engine, AccessRequest)) == 1
    # Others, and the normal way, are never blocked by it.
    submit(glass, requester=BYSTANDER, duration=30 * MINUTE, break_glass=True)
    submit(glass)


def test_break_glass_cannot_be_extended(glass: Harness) -> None:
    request_id = _glass_for(glass)
    with pytest.raises(Conflict, match="Break-glass access cannot be extended"):
        glass.lifecycle.request_extension(request_id, REQUESTER, "10m")
    assert len(rows(glass.engine, AccessRequest)) == 1


# -- extensions ------------------------------------------------------------------------------------


@pytest.fixture
def h() -> Harness:
    return harness()


def active(h: Harness, duration: timedelta = HOUR) -> int:
    """An active payments-db grant issued at the current time (no lease renewal at issue)."""
    request_id = submit(h, duration=duration)
    assert h.lifecycle.decide(request_id, APPROVER, approve=True).status is S.ACTIVE
    return request_id


@pytest.mark.parametrize("actor", [APPROVER, BYSTANDER])
def test_only_the_requester_asks_to_extend(h: Harness, actor: str) -> None:
    request_id = active(h)
    with pytest.raises(NotAllowed, match="Only the requester"):
        h.lifecycle.request_extension(request_id, actor, "30m")
    assert len(rows(h.engine, AccessRequest)) == 1


@pytest.mark.parametrize("state", ["pending", "denied", "revoked", "failed"])
def test_only_active_access_is_extended(h: Harness, state: str) -> None:
    if state == "failed":
        h.issuer.fail("create")
    request_id = submit(h)
    if state == "denied":
        h.lifecycle.decide(request_id, APPROVER, approve=False)
    elif state in {"revoked", "failed"}:
        h.lifecycle.decide(request_id, APPROVER, approve=True)
        if state == "revoked":
            h.lifecycle.revoke_early(request_id, REQUESTER)
    label = h.lifecycle.get(request_id).status.label
    with pytest.raises(Conflict, match=f"is {label}; only active access can be extended"):
        h.lifecycle.request_extension(request_id, REQUESTER, "30m")
    assert len(rows(h.engine, AccessRequest)) == 1


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("3h1m", "at most 3h more can be granted"),
        ("4h", "at most 3h more can be granted"),
        ("5h", "longer than this resource allows"),
        ("30s", "too short"),
        ("soon", "is not a duration"),
    ],
)
def test_extension_beyond_the_resource_maximum_is_refused(
    h: Harness, extra: str, match: str
) -> None:
    request_id = active(h)
    with pytest.raises(DurationError, match=match):
        h.lifecycle.request_extension(request_id, REQUESTER, extra)
    assert len(rows(h.engine, AccessRequest)) == 1


def test_extension_room_counts_from_issue_not_from_now(h: Harness) -> None:
    request_id = active(h)
    h.clock.advance(50 * MINUTE)  # time passing does not give more room
    with pytest.raises(DurationError, match="at most 3h more"):
        h.lifecycle.request_extension(request_id, REQUESTER, "3h10m")
    result = h.lifecycle.request_extension(request_id, REQUESTER, "3h")
    assert result.view.status is S.PENDING


def test_a_second_pending_extension_is_refused(h: Harness) -> None:
    request_id = active(h)
    first = h.lifecycle.request_extension(request_id, REQUESTER, "30m").view
    with pytest.raises(
        Conflict, match=f"Extension #{first.id} of request #{request_id} is already waiting"
    ):
        h.lifecycle.request_extension(request_id, REQUESTER, "15m")
    assert len(rows(h.engine, AccessRequest)) == 2


def test_extension_request_is_routed_like_a_request(h: Harness) -> None:
    request_id = active(h)
    h.clock.advance(10 * MINUTE)
    result = h.lifecycle.request_extension(request_id, REQUESTER, "30m")
    view = result.view
    assert (view.kind, view.parent_id, view.status, view.duration, view.reason) == (
        "extension",
        request_id,
        S.PENDING,
        30 * MINUTE,
        REASON,
    )
    assert result.asked == (APPROVER, OTHER_APPROVER)
    assert view.label == f"Extension request #{view.id}"
    assert h.becomes_due("pending expiry", view.id, START + 10 * MINUTE + HOUR)
    (action, _, details) = events(h, view.id)[0]
    assert action == "requested" and details["kind"] == "extension"
    assert details["extends"] == request_id
    assert posted(h)[-1] == ("requested", f"asked to extend #{request_id} by 30m", False)
    assert h.notifier.of("announce_request")[-1][0].is_extension


def test_approved_extension_renews_and_reschedules(h: Harness) -> None:
    request_id = active(h)
    grant = grant_of(h, request_id)
    h.clock.advance(10 * MINUTE)
    extension = h.lifecycle.request_extension(request_id, REQUESTER, "30m").view.id
    h.clock.advance(5 * MINUTE)
    done = h.lifecycle.decide(extension, OTHER_APPROVER, approve=True)

    new_expiry = START + HOUR + 30 * MINUTE
    assert done.status is S.ENDED and done.decided_by == OTHER_APPROVER
    assert h.issuer.count("create") == 1
    (renew,) = [args for name, args in h.issuer.calls if name == "renew"]
    assert renew == (grant.token_accessor, grant.lease_id, new_expiry)
    assert utc(grant_of(h, request_id).expires_at) == new_expiry
    assert h.becomes_due("grant expiry", grant.id, new_expiry)  # no longer at START + HOUR
    assert not waiting(h, request_id) and not waiting(h, extension)
    parent = h.lifecycle.get(request_id)
    assert parent.status is S.ACTIVE and parent.expires_at == new_expiry
    assert actions(h, extension) == ["requested", "approved"]
    assert actions(h, request_id)[-1] == "extended"
    _, actor, details = events(h, request_id)[-1]
    assert actor == SYSTEM_ACTOR
    assert (details["extension"], details["from"], details["to"], details["capped_by_vault"]) == (
        extension,
        (START + HOUR).isoformat(),
        new_expiry.isoformat(),
        False,
    )
    ((user, text),) = [t for t in h.notifier.tells if "extended" in t[1]]
    assert user == REQUESTER and f"(request #{request_id}) is extended until" in text
    assert "capped" not in text
    assert posted(h)[-1][0] == "extended"
    assert chain_ok(h)


def test_extension_capped_by_vault_is_reported(h: Harness) -> None:
    request_id = active(h)
    h.clock.advance(10 * MINUTE)
    extension = h.lifecycle.request_extension(request_id, REQUESTER, "1h").view.id
    h.issuer.renew_cap = HOUR + 15 * MINUTE  # the role allows less than asked
    done = h.lifecycle.decide(extension, APPROVER, approve=True)

    capped = START + 10 * MINUTE + HOUR + 15 * MINUTE
    assert done.status is S.ENDED
    assert utc(grant_of(h, request_id).expires_at) == capped
    assert h.becomes_due("grant expiry", grant_of(h, request_id).id, capped)
    (text,) = [text for user, text in h.notifier.tells if "extended" in text]
    assert "Vault capped the renewal below the 1h approved" in text
    details = events(h, request_id)[-1][2]
    assert details["capped_by_vault"] is True
    assert details["asked_until"] == (START + 2 * HOUR).isoformat()


def test_extension_that_vault_refuses_fails_and_leaves_the_grant(h: Harness) -> None:
    request_id = active(h)
    extension = h.lifecycle.request_extension(request_id, REQUESTER, "30m").view.id
    h.issuer.fail("renew")
    done = h.lifecycle.decide(extension, APPROVER, approve=True)

    assert done.status is S.FAILED
    assert done.failure is not None and "Vault refused to renew" in done.failure
    grant = grant_of(h, request_id)
    assert grant.status == GrantStatus.ACTIVE and utc(grant.expires_at) == START + HOUR
    assert h.becomes_due("grant expiry", grant.id, START + HOUR)
    assert h.lifecycle.get(request_id).status is S.ACTIVE
    assert "extended" not in actions(h, request_id)
    assert actions(h, extension)[-1] == "failed"
    assert any(
        user == REQUESTER and "could not be applied" in text for user, text in h.notifier.tells
    )
    assert any(action == "failed" and alert for action, _, alert in posted(h))
    # Nothing is waiting any more: a new extension may be asked for.
    assert h.lifecycle.request_extension(request_id, REQUESTER, "15m").view.status is S.PENDING


def test_extension_approved_after_the_grant_ended_fails(h: Harness) -> None:
    request_id = active(h)
    extension = h.lifecycle.request_extension(request_id, REQUESTER, "30m").view.id
    h.lifecycle.revoke_early(request_id, REQUESTER)
    done = h.lifecycle.decide(extension, APPROVER, approve=True)
    assert done.status is S.FAILED and done.failure == "the access had already ended"
    assert h.issuer.count("renew") == 0


def test_extension_needs_the_resources_approvals_too(two: Harness) -> None:
    request_id = submit(two)
    two.lifecycle.decide(request_id, APPROVER, approve=True)
    two.lifecycle.decide(request_id, OTHER_APPROVER, approve=True)
    extension = two.lifecycle.request_extension(request_id, REQUESTER, "30m").view.id
    assert two.lifecycle.decide(extension, APPROVER, approve=True).status is S.PENDING
    assert two.issuer.count("renew") == 0
    assert two.lifecycle.decide(extension, THIRD_APPROVER, approve=True).status is S.ENDED
    assert two.issuer.count("renew") == 1


def test_extension_rechecks_the_requesters_list() -> None:
    directory = FakeDirectory(
        tier_users=[("policy", (APPROVER, OTHER_APPROVER), None)],
        approvers={APPROVER, OTHER_APPROVER},
        groups={"S0SRE": {THIRD_APPROVER}},
    )
    h = harness(LIMITED, directory)
    request_id = submit(h, requester=THIRD_APPROVER)
    h.lifecycle.decide(request_id, APPROVER, approve=True)
    directory.groups["S0SRE"].discard(THIRD_APPROVER)  # left the team meanwhile
    with pytest.raises(NotAllowed, match="requesters"):
        h.lifecycle.request_extension(request_id, THIRD_APPROVER, "30m")
    assert len(rows(h.engine, AccessRequest)) == 1


# -- the timers, after a restart too --------------------------------------------------------------


def test_a_restart_expires_a_pending_request_past_its_time() -> None:
    h = harness(ROUTED)
    request_id = submit(h)
    r = restart(h, START + HOUR)
    counts = r.tick()
    assert counts == {"pending expiry": 1}  # not escalated first: its time is up
    assert r.lifecycle.get(request_id).status is S.EXPIRED
    assert any(user == REQUESTER and "expired" in text for user, text in r.notifier.tells)
    assert actions(r, request_id)[-1] == "request_expired"
    assert not waiting(r, request_id)


@pytest.mark.parametrize(
    ("policy", "restart_after", "escalation_at"),
    [
        (ROUTED, 5 * MINUTE, START + 10 * MINUTE),  # not yet due: at its time
        (ROUTED, 10 * MINUTE - timedelta(seconds=1), START + 10 * MINUTE),
        (EXAMPLE_POLICY, 30 * MINUTE, None),  # no escalate_after configured
    ],
)
def test_a_restart_leaves_a_future_pending_request_due_at_its_times(
    policy: str,
    restart_after: timedelta,
    escalation_at: datetime | None,
) -> None:
    h = harness(policy)
    request_id = submit(h)
    r = restart(h, START + restart_after)
    assert r.tick() == {}
    assert r.lifecycle.get(request_id).status is S.PENDING
    assert r.becomes_due("pending expiry", request_id, START + HOUR)
    if escalation_at is None:
        assert r.due("escalation", START + HOUR - timedelta(seconds=1)) == []
    else:
        assert r.becomes_due("escalation", request_id, escalation_at)
    assert r.notifier.calls == []
    assert actions(r, request_id) == ["requested"]


def test_a_restart_escalates_an_overdue_request_at_once() -> None:
    h = harness(ROUTED, three_tiers())
    request_id = submit(h)
    r = restart(h, START + 30 * MINUTE, three_tiers())
    assert r.tick() == {"escalation": 1}
    view = r.lifecycle.get(request_id)
    assert (view.status, view.escalation_level) == (S.PENDING, 1)
    assert actions(r, request_id) == ["requested", "escalated"]
    ((_, users, in_channel),) = r.notifier.of("announce_request")
    assert (users, in_channel) == ((OTHER_APPROVER,), False)
    assert r.becomes_due("pending expiry", request_id, START + HOUR)
    # The next tier's turn comes escalate_after from now, not in the past.
    assert r.becomes_due("escalation", request_id, START + 40 * MINUTE)


def test_a_restart_keeps_the_next_escalation_level_at_its_time() -> None:
    h = harness(ROUTED, three_tiers())
    request_id = submit(h)
    h.clock.advance(10 * MINUTE)
    h.lifecycle.escalate(request_id)
    r = restart(h, START + 12 * MINUTE, three_tiers())
    assert r.tick() == {}
    assert r.becomes_due("escalation", request_id, START + 20 * MINUTE)
    assert r.lifecycle.get(request_id).escalation_level == 1


def test_the_tick_expires_and_escalates_what_is_overdue_and_nothing_else() -> None:
    h = harness(ROUTED, three_tiers())
    due = submit(h)
    h.clock.advance(30 * MINUTE)
    later = submit(h)
    h.clock.advance(35 * MINUTE)  # `due` is past pending_until; `later` past escalate_after
    counts = h.tick()
    assert counts == {"pending expiry": 1, "escalation": 1}
    assert h.lifecycle.get(due).status is S.EXPIRED
    assert h.lifecycle.get(later).escalation_level == 1
    assert h.becomes_due("pending expiry", later, START + 30 * MINUTE + HOUR)  # unchanged


def _stranded_extension(h: Harness) -> tuple[int, int]:
    """An extension approved just before the process died mid-renewal: left APPROVED."""
    request_id = active(h)
    extension = h.lifecycle.request_extension(request_id, REQUESTER, "30m").view.id
    h.issuer.crash("renew")
    with pytest.raises(SimulatedCrash):
        h.lifecycle.decide(extension, APPROVER, approve=True)
    assert h.lifecycle.get(extension).status is S.APPROVED
    return request_id, extension


def test_a_restart_applies_an_approved_extension_left_by_a_crash(h: Harness) -> None:
    request_id, extension = _stranded_extension(h)
    r = restart(h, START + 10 * MINUTE)
    counts = r.tick()
    assert counts["interrupted approval"] == 1
    assert r.lifecycle.get(extension).status is S.ENDED
    assert r.issuer.count("renew") == 2  # the crashed call, then the one that applied it
    assert utc(grant_of(r, request_id).expires_at) == START + HOUR + 30 * MINUTE
    assert r.lifecycle.get(request_id).status is S.ACTIVE
    # the tick also finds the credentials were collected (unwrapped) in time
    assert actions(r, request_id)[-2:] == ["extended", "collected"]
    assert chain_ok(r)


def test_a_restart_keeps_the_end_of_an_extension_it_applied(h: Harness) -> None:
    request_id, _ = _stranded_extension(h)
    grant_id = grant_of(h, request_id).id
    r = restart(h, START + 10 * MINUTE)
    r.tick()
    assert r.becomes_due("grant expiry", grant_id, START + HOUR + 30 * MINUTE)


def test_a_restart_does_not_end_a_grant_it_just_extended(h: Harness) -> None:
    request_id, extension = _stranded_extension(h)
    r = restart(h, START + HOUR + 5 * MINUTE)  # back after the old expiry, before the new one
    counts = r.tick()
    assert r.lifecycle.get(extension).status is S.ENDED
    assert counts["grant expiry"] == 0
    assert r.lifecycle.get(request_id).status is S.ACTIVE
    assert r.issuer.count("revoke") == 0


def test_escalation_asks_the_next_unasked_source_even_if_an_earlier_one_emptied(
    routed: tuple[Harness, FakeDirectory],
) -> None:
    h, directory = routed
    request_id = submit(h)  # the primary tier (APPROVER) is asked
    # The primary source now answers nobody (say PagerDuty went down): the staffed tiers shift.
    directory.tier_users = [("primary", (), "PagerDuty unreachable"), *directory.tier_users[1:]]
    h.clock.advance(10 * MINUTE)
    assert h.lifecycle.escalate(request_id) is True
    _, (_, users, _) = h.notifier.of("announce_request")
    assert users == (OTHER_APPROVER,)  # "secondary", not skipped to the leads
    assert h.lifecycle.get(request_id).asked_sources == ("primary", "secondary")
    h.clock.advance(10 * MINUTE)
    assert h.lifecycle.escalate(request_id) is True
    _, _, (_, users, _) = h.notifier.of("announce_request")
    assert users == (LEAD,)
    assert h.lifecycle.escalate(request_id) is False
