"""Digest arithmetic: counts, held vs asked, active now, each attention rule, the empty day."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from bot.domain import digest as digest_module
from bot.domain.digest import (
    LATE_GRACE,
    Approval,
    AttentionKind,
    Digest,
    RequestRecord,
    build_digest,
    held_for,
    is_outside_hours,
)
from bot.domain.requests import RequestStatus

BERLIN = ZoneInfo("Europe/Berlin")
# Tuesday 3 November 2026, 09:00 in Berlin (CET, UTC+1).
END = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
START = END - timedelta(hours=24)
# Monday 2 November 2026, 11:00 in Berlin: inside working hours.
MIDDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CAROL, ALICE, BOB, DAVE = "U0CAROL", "U0ALICE", "U0BOB", "U0DAVE"
DAYTIME_APPROVAL = (Approval(ALICE, MIDDAY),)

K = AttentionKind


def record(request_id: int = 1, **overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "requester": CAROL,
        "resource": "payments-db",
        "reason": "INC-4211 checkout errors",
        "duration_asked": timedelta(hours=1),
        "status": "pending",
        "created_at": MIDDAY,
    }
    fields.update(overrides)
    return RequestRecord(**fields)


def granted(
    request_id: int = 1,
    *,
    at: datetime = MIDDAY,
    asked: timedelta = timedelta(hours=1),
    ended_after: timedelta | None = None,
    live: bool = False,
    approver: str = ALICE,
    **overrides: Any,
) -> RequestRecord:
    """An approved, issued grant that ended ``ended_after`` its issue (by default when it
    expired, on time), or is still ``live``."""
    if not live and ended_after is None:
        ended_after = asked
    fields: dict[str, Any] = {
        "status": "ended" if ended_after is not None else "active",
        "created_at": at - timedelta(minutes=2),
        "approvals": (Approval(approver, at - timedelta(minutes=1)),),
        "decided_at": at - timedelta(minutes=1),
        "issued_at": at,
        "expires_at": at + asked,
        "ended_at": at + ended_after if ended_after is not None else None,
        "end_reason": "expired"
        if ended_after == asked
        else ("revoked" if ended_after is not None else None),
        "duration_asked": asked,
    }
    fields.update(overrides)
    return record(request_id, **fields)


def digest(
    *records: RequestRecord,
    now: datetime = END,
    chain_ok: bool = True,
    chain_problem: str | None = None,
    **kwargs: Any,
) -> Digest:
    return build_digest(
        records,
        window_start=START,
        window_end=END,
        now=now,
        chain_ok=chain_ok,
        chain_problem=chain_problem,
        tz=BERLIN,
        **kwargs,
    )


def kinds(result: Digest) -> list[AttentionKind]:
    return [item.kind for item in result.attention]


# -- counts ---------------------------------------------------------------------------------------


def test_counts_each_outcome_in_the_window() -> None:
    decided = MIDDAY + timedelta(minutes=5)
    result = digest(
        record(1),  # requested, pending
        granted(2),  # requested + approved
        record(3, status="denied", denied_by=ALICE, decided_at=decided),
        record(4, status="expired", decided_at=decided),
        granted(5, break_glass=True, approvals=(), decided_at=None),  # break-glass, no approval
        record(6, status="failed", approvals=(Approval(ALICE, decided),), decided_at=decided),
    )
    c = result.counts
    assert (c.requested, c.approved, c.denied, c.expired_unanswered, c.break_glass, c.failed) == (
        6,
        2,
        1,
        1,
        1,
        1,
    )


def test_counts_use_a_half_open_window() -> None:
    result = digest(
        record(1, created_at=START),  # first instant: in
        record(2, created_at=END),  # last instant: next day
        record(3, created_at=START - timedelta(microseconds=1)),  # the day before
        record(
            4,
            created_at=START - timedelta(hours=1),
            status="denied",
            denied_by=ALICE,
            decided_at=START + timedelta(minutes=1),
        ),  # asked before, denied in
    )
    assert result.counts.requested == 1
    assert result.counts.denied == 1


@pytest.mark.parametrize("status", ["pending", "denied", "withdrawn", "expired"])
def test_one_approval_of_two_is_not_an_approved_request(status: str) -> None:
    later = MIDDAY + timedelta(minutes=30)
    partial = record(
        1,
        approvals=(Approval(ALICE, MIDDAY),),
        status=status,
        decided_at=None if status == "pending" else later,
        denied_by=BOB if status == "denied" else None,
    )
    result = digest(partial)
    assert result.counts.approved == 0
    assert result.counts.denied == (status == "denied")
    assert result.counts.expired_unanswered == (status == "expired")


# -- grants: asked vs held ------------------------------------------------------------------------


def test_held_is_the_time_until_the_grant_ended() -> None:
    result = digest(granted(1, asked=timedelta(hours=1), ended_after=timedelta(minutes=20)))
    (line,) = result.grants
    assert line.record.duration_asked == timedelta(hours=1)
    assert line.held == timedelta(minutes=20)
    assert line.ended


def test_a_live_grant_is_held_until_the_window_ends() -> None:
    issued = END - timedelta(minutes=30)
    result = digest(granted(1, at=issued, live=True), now=END + timedelta(minutes=5))
    (line,) = result.grants
    assert line.held == timedelta(minutes=30)
    assert not line.ended


def test_a_grant_that_ended_after_the_window_counts_only_up_to_its_end() -> None:
    issued = END - timedelta(minutes=30)
    late_digest = END + timedelta(hours=2)
    result = digest(granted(1, at=issued, ended_after=timedelta(hours=1)), now=late_digest)
    (line,) = result.grants
    assert line.held == timedelta(minutes=30)
    assert not line.ended


def test_grants_are_those_live_at_some_moment_of_the_window() -> None:
    result = digest(
        granted(1, at=START - timedelta(minutes=30), ended_after=timedelta(hours=1)),  # into it
        granted(2, at=START - timedelta(hours=3), ended_after=timedelta(hours=1)),  # before it
        granted(3, at=END + timedelta(minutes=1), live=True),  # after it
        granted(4, at=MIDDAY, ended_after=timedelta(minutes=10)),
        record(5, status="denied", denied_by=ALICE, decided_at=MIDDAY),  # no grant
        now=END + timedelta(hours=1),
    )
    assert [g.record.request_id for g in result.grants] == [1, 4]
    assert result.grants[0].held == timedelta(hours=1)


def test_held_for_never_negative_and_zero_without_a_grant() -> None:
    assert held_for(record(1), END, END) == timedelta(0)
    future = granted(1, at=END + timedelta(hours=1), live=True)
    assert held_for(future, END, END) == timedelta(0)


# -- active now -----------------------------------------------------------------------------------


def test_active_now_lists_live_grants_by_expiry() -> None:
    result = digest(
        granted(1, at=END - timedelta(minutes=10), asked=timedelta(hours=2), live=True),
        granted(2, at=END - timedelta(minutes=10), asked=timedelta(minutes=30), live=True),
        granted(3, at=MIDDAY, ended_after=timedelta(minutes=5)),
        record(4),
    )
    assert [r.request_id for r in result.active] == [2, 1]


def test_active_now_is_judged_at_now_not_at_the_window_end() -> None:
    live = granted(1, at=END - timedelta(minutes=10), ended_after=timedelta(minutes=20))
    assert [r.request_id for r in digest(live, now=END).active] == [1]
    assert digest(live, now=END + timedelta(minutes=15)).active == ()


def test_with_a_frozen_clock_now_is_the_frozen_time() -> None:
    with freeze_time("2026-11-03 08:00:00"):
        now = datetime.now(UTC)
        result = digest(granted(1, at=now - timedelta(minutes=45), live=True), now=now)
    assert result.now == END
    assert result.grants[0].held == timedelta(minutes=45)
    assert [r.request_id for r in result.active] == [1]


# -- attention: failed and late revocations -------------------------------------------------------


def test_a_failing_revocation_needs_attention_even_from_last_week() -> None:
    old = granted(1, at=START - timedelta(days=7), live=True, revoke_failed=True, revoke_attempts=5)
    result = digest(old)
    assert kinds(result) == [K.REVOCATION_FAILED]
    assert result.attention[0].attempts == 5
    assert result.attention[0].still_live


def test_a_revocation_that_failed_once_and_then_succeeded_is_not_flagged() -> None:
    result = digest(
        granted(1, ended_after=timedelta(hours=1), revoke_attempts=1, revoke_failed=False)
    )
    assert result.attention == ()


def test_a_revocation_later_than_the_grace_is_flagged() -> None:
    asked = timedelta(hours=1)
    late = granted(1, asked=asked, ended_after=asked + LATE_GRACE + timedelta(minutes=1))
    result = digest(late)
    assert kinds(result) == [K.LATE_REVOCATION]
    assert result.attention[0].late_by == LATE_GRACE + timedelta(minutes=1)
    assert not result.attention[0].still_live


def test_a_revocation_within_the_grace_is_not_flagged() -> None:
    asked = timedelta(hours=1)
    assert digest(granted(1, asked=asked, ended_after=asked + LATE_GRACE)).attention == ()


def test_a_late_revocation_from_an_earlier_day_is_not_repeated() -> None:
    asked = timedelta(hours=1)
    earlier = granted(
        1, at=START - timedelta(days=2), asked=asked, ended_after=asked + timedelta(minutes=30)
    )
    assert digest(earlier).attention == ()


def test_a_grant_still_live_past_its_expiry_is_flagged() -> None:
    expiry = END - LATE_GRACE - timedelta(minutes=1)
    overdue = granted(1, at=expiry - timedelta(hours=1), live=True, approvals=DAYTIME_APPROVAL)
    result = digest(overdue)
    assert kinds(result) == [K.LATE_REVOCATION]
    assert result.attention[0].still_live
    assert result.attention[0].late_by == LATE_GRACE + timedelta(minutes=1)


def test_a_grant_just_past_expiry_within_the_grace_is_not_flagged() -> None:
    expiry = END - timedelta(minutes=1)
    within = granted(1, at=expiry - timedelta(hours=1), live=True, approvals=DAYTIME_APPROVAL)
    assert digest(within).attention == ()


def test_a_failing_revocation_is_listed_once_not_also_as_late() -> None:
    overdue = granted(
        1, at=MIDDAY - timedelta(hours=2), live=True, revoke_failed=True, revoke_attempts=3
    )
    assert kinds(digest(overdue)) == [K.REVOCATION_FAILED]


# -- attention: break-glass -----------------------------------------------------------------------


def test_unreviewed_break_glass_is_flagged_whenever_it_happened() -> None:
    old = granted(
        1,
        at=START - timedelta(days=10),
        ended_after=timedelta(minutes=15),
        break_glass=True,
        approvals=(),
        decided_at=None,
    )
    result = digest(old)
    assert kinds(result) == [K.UNREVIEWED_BREAK_GLASS]
    assert result.counts.break_glass == 0  # not in the window's counts


def test_reviewed_break_glass_is_not_flagged() -> None:
    reviewed = granted(
        1, ended_after=timedelta(minutes=15), break_glass=True, approvals=(), reviewed_by=ALICE
    )
    assert digest(reviewed).attention == ()


# -- attention: approvals outside working hours ----------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "outside"),
    [
        (datetime(2026, 11, 2, 10, 0, tzinfo=UTC), False),  # Mon 11:00 CET
        (datetime(2026, 11, 2, 7, 0, tzinfo=UTC), False),  # Mon 08:00 CET: opening time is in
        (datetime(2026, 11, 2, 6, 59, tzinfo=UTC), True),  # Mon 07:59 CET
        (datetime(2026, 11, 2, 18, 0, tzinfo=UTC), True),  # Mon 19:00 CET: closing time is out
        (datetime(2026, 11, 2, 17, 59, tzinfo=UTC), False),  # Mon 18:59 CET
        (datetime(2026, 10, 31, 10, 0, tzinfo=UTC), True),  # Sat 11:00 CET
        (datetime(2026, 11, 1, 10, 0, tzinfo=UTC), True),  # Sun 11:00 CET
        (datetime(2026, 11, 2, 23, 30, tzinfo=UTC), True),  # Mon 23:30 UTC is Tue 00:30 CET
        (datetime(2026, 10, 30, 23, 30, tzinfo=UTC), True),  # Fri 23:30 UTC is Sat 00:30 CET
    ],
)
def test_outside_hours_in_the_policy_time_zone(moment: datetime, outside: bool) -> None:
    assert is_outside_hours(moment, BERLIN) is outside


def test_outside_hours_follows_daylight_saving_time() -> None:
    # 06:30 UTC is 08:30 in a Berlin summer (CEST, UTC+2) and 07:30 in its winter (CET, UTC+1).
    summer = datetime(2026, 7, 14, 6, 30, tzinfo=UTC)
    winter = datetime(2026, 11, 3, 6, 30, tzinfo=UTC)
    assert not is_outside_hours(summer, BERLIN)
    assert is_outside_hours(winter, BERLIN)
    # And on the morning the clocks go forward (Sunday 29 March 2026) and the Monday after.
    assert is_outside_hours(datetime(2026, 3, 29, 8, 0, tzinfo=UTC), BERLIN)  # Sunday
    assert not is_outside_hours(datetime(2026, 3, 30, 6, 0, tzinfo=UTC), BERLIN)  # Mon 08:00


def test_outside_hours_respects_configured_hours() -> None:
    moment = datetime(2026, 11, 2, 6, 30, tzinfo=UTC)  # Mon 07:30 CET
    assert is_outside_hours(moment, BERLIN)
    assert not is_outside_hours(moment, BERLIN, (time(7), time(17)))


def test_an_approval_at_night_in_the_window_is_flagged_with_who_approved() -> None:
    night = datetime(2026, 11, 2, 22, 15, tzinfo=UTC)  # Mon 23:15 CET
    result = digest(granted(1, at=night + timedelta(minutes=1), approver=BOB))
    assert kinds(result) == [K.OUTSIDE_HOURS]
    item = result.attention[0]
    assert item.people == (BOB, CAROL)
    assert item.at == night


def test_an_approval_in_working_hours_is_not_flagged() -> None:
    assert digest(granted(1, at=MIDDAY)).attention == ()


def test_each_of_several_approvals_is_judged_at_its_own_time() -> None:
    night = datetime(2026, 11, 2, 21, 0, tzinfo=UTC)
    two = granted(1, approvals=(Approval(ALICE, MIDDAY), Approval(BOB, night)), decided_at=night)
    result = digest(two)
    assert [(a.kind, a.people[0]) for a in result.attention] == [(K.OUTSIDE_HOURS, BOB)]


def test_a_night_approval_before_the_window_is_not_flagged() -> None:
    night = START - timedelta(hours=3)  # Sun 06:00 CET
    assert digest(granted(1, at=night, ended_after=timedelta(minutes=10))).attention == ()


# -- attention: mutual approvals ------------------------------------------------------------------


def _approved(request_id: int, requester: str, approver: str, at: datetime) -> RequestRecord:
    return granted(
        request_id, at=at, requester=requester, approver=approver, ended_after=timedelta(minutes=10)
    )


def test_two_people_approving_each_other_twice_each_way_are_flagged() -> None:
    times = [MIDDAY + timedelta(minutes=20 * n) for n in range(5)]
    result = digest(
        _approved(1, CAROL, DAVE, times[0]),
        _approved(2, CAROL, DAVE, times[1]),
        _approved(3, DAVE, CAROL, times[2]),
        _approved(4, DAVE, CAROL, times[3]),
        _approved(5, CAROL, DAVE, times[4]),
    )
    assert kinds(result) == [K.MUTUAL_APPROVALS]
    item = result.attention[0]
    assert item.people == (CAROL, DAVE)
    assert item.times == (2, 3)  # Carol approved Dave twice; Dave approved Carol three times
    assert item.request_ids == (1, 2, 3, 4, 5)


def test_mutual_approvals_need_the_threshold_both_ways() -> None:
    result = digest(
        _approved(1, CAROL, DAVE, MIDDAY),
        _approved(2, CAROL, DAVE, MIDDAY),
        _approved(3, CAROL, DAVE, MIDDAY),
        _approved(4, DAVE, CAROL, MIDDAY),
    )
    assert result.attention == ()


def test_mutual_approvals_count_only_the_window() -> None:
    before = START - timedelta(hours=5)
    result = digest(
        _approved(1, CAROL, DAVE, MIDDAY),
        _approved(2, CAROL, DAVE, before),
        _approved(3, DAVE, CAROL, MIDDAY),
        _approved(4, DAVE, CAROL, MIDDAY),
    )
    assert K.MUTUAL_APPROVALS not in kinds(result)


def test_one_way_approvals_are_normal() -> None:
    result = digest(*[_approved(n, CAROL, ALICE, MIDDAY) for n in range(1, 6)])
    assert result.attention == ()


# -- attention order, chain, empty day ------------------------------------------------------------


def test_attention_lists_the_most_urgent_first() -> None:
    night = datetime(2026, 11, 2, 22, 0, tzinfo=UTC)
    result = digest(
        granted(1, at=night),  # outside hours
        granted(
            2,
            at=MIDDAY,
            break_glass=True,
            approvals=(),
            decided_at=None,
            ended_after=timedelta(minutes=5),
        ),  # break-glass
        granted(3, at=MIDDAY, live=True, revoke_failed=True, revoke_attempts=2),  # failing
    )
    assert kinds(result) == [K.REVOCATION_FAILED, K.UNREVIEWED_BREAK_GLASS, K.OUTSIDE_HOURS]


def test_a_broken_chain_needs_attention_and_is_never_an_empty_day() -> None:
    result = digest(chain_ok=False, chain_problem="audit chain BROKEN at event 57: changed")
    assert result.needs_attention == 1
    assert not result.is_empty
    assert result.chain_problem == "audit chain BROKEN at event 57: changed"
    assert digest(chain_ok=False).chain_problem  # a reason even when none was given


def test_a_problem_is_dropped_when_the_chain_is_intact() -> None:
    assert digest(chain_problem="stale").chain_problem is None


def test_a_day_with_no_activity_is_empty() -> None:
    last_week = granted(1, at=START - timedelta(days=7), ended_after=timedelta(hours=1))
    assert digest().is_empty
    assert digest(last_week).is_empty


@pytest.mark.parametrize(
    "busy",
    [
        record(1),  # a request
        granted(1, at=START - timedelta(hours=2), live=True),  # still live
        granted(
            1,
            at=START - timedelta(days=3),
            ended_after=timedelta(minutes=5),
            break_glass=True,
            approvals=(),
        ),  # unreviewed
    ],
)
def test_a_day_with_anything_in_it_is_not_empty(busy: RequestRecord) -> None:
    assert not digest(busy).is_empty


def test_times_must_be_aware_and_the_window_ordered() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_digest(
            [],
            window_start=START.replace(tzinfo=None),
            window_end=END,
            now=END,
            chain_ok=True,
            tz=BERLIN,
        )
    with pytest.raises(ValueError, match="start before"):
        build_digest([], window_start=END, window_end=START, now=END, chain_ok=True, tz=BERLIN)


def test_records_in_other_time_zones_compare_by_instant() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    shifted = replace(record(1), created_at=START.astimezone(tokyo))
    assert digest(shifted).counts.requested == 1


def test_held_counts_elapsed_time_across_the_autumn_clock_change() -> None:
    # 01:00 CEST to 04:00 CET on Sunday 25 October 2026 is four hours, not three.
    issued = datetime(2026, 10, 25, 1, 0, tzinfo=BERLIN)
    ended = datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN)
    end = datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    grant = replace(
        granted(1, asked=timedelta(hours=4), approvals=()),
        issued_at=issued,
        expires_at=ended,
        ended_at=ended,
    )
    assert ended - issued == timedelta(hours=3)  # what Python says for the same zone
    assert held_for(grant, end, end) == timedelta(hours=4)
    result = build_digest(
        [grant],
        window_start=end - timedelta(hours=24),
        window_end=end,
        now=end,
        chain_ok=True,
        tz=BERLIN,
    )
    assert result.attention == ()  # ended exactly at expiry: not late


def test_naive_record_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(1, created_at=datetime(2026, 11, 2, 10, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        Approval(ALICE, datetime(2026, 11, 2, 10, 0))


def test_status_names_match_the_request_state_machine() -> None:
    assert RequestStatus.PENDING.value == digest_module.PENDING
    assert RequestStatus.DENIED.value == digest_module.DENIED
    assert RequestStatus.FAILED.value == digest_module.FAILED
    assert RequestStatus.WITHDRAWN.value == digest_module.WITHDRAWN
    expired = getattr(RequestStatus, "EXPIRED", None)  # added with pending_ttl
    if expired is not None:
        assert expired.value == digest_module.EXPIRED_UNANSWERED
