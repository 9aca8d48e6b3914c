"""Approver resolution: tiers in order, fallback with notes, the requester never counts, and a
click counts only from whoever is on call at that moment. Plus the static and Slack user group
sources and the factory that builds sources from the policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from freezegun import freeze_time
from slack_sdk.errors import SlackApiError

from bot.domain.rotations import StaticRotation
from bot.oncall.base import OnCall, OnCallUnavailable
from bot.oncall.config import (
    PagerDutyRotationConfig,
    StaticRotationConfig,
    UsergroupRotationConfig,
)
from bot.oncall.pagerduty import PagerDutySource
from bot.oncall.resolver import (
    ApproverResolver,
    ApproverTier,
    OnCallConfigError,
    UnknownApprover,
    build_resolver,
    build_sources,
)
from bot.oncall.static import StaticSource
from bot.oncall.usergroup import SlackUsergroups, UsergroupSource
from bot.ports import SystemClock

NOW = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)
REQUESTER = "U0REQ"
ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"


@dataclass
class FakeSource:
    """An OnCallSource with a fixed answer that records the instants it was asked about."""

    name: str
    users: tuple[str, ...] = ()
    available: bool = True
    note: str | None = None
    raises: Exception | None = None
    asked: list[datetime] = field(default_factory=list)

    def current(self, now: datetime) -> OnCall:
        self.asked.append(now)
        if self.raises is not None:
            raise self.raises
        return OnCall(self.name, self.users, self.available, self.note)


def resolver(*sources: FakeSource | StaticSource) -> ApproverResolver:
    return ApproverResolver({source.name: source for source in sources})


def down(name: str = "platform") -> FakeSource:
    return FakeSource(name, available=False, note="PagerDuty unreachable (HTTP 503)")


# ---------------------------------------------------------------- tiers


def test_each_entry_becomes_a_tier_in_order() -> None:
    r = resolver(FakeSource("payments-primary", (ALICE,)), FakeSource("sre-leads", (BOB, CAROL)))
    assert r.tiers(["payments-primary", "sre-leads", DAVE], REQUESTER, NOW) == [
        ApproverTier("payments-primary", (ALICE,), None),
        ApproverTier("sre-leads", (BOB, CAROL), None),
        ApproverTier(DAVE, (DAVE,), None),
    ]


def test_sources_are_asked_about_the_instant_given() -> None:
    source = FakeSource("payments-primary", (ALICE,))
    resolver(source).tiers(["payments-primary"], REQUESTER, NOW)
    assert source.asked == [NOW]


def test_the_requester_is_removed_from_every_tier() -> None:
    r = resolver(
        FakeSource("payments-primary", (REQUESTER, ALICE)),
        FakeSource("sre-leads", (BOB, REQUESTER)),
    )
    tiers = r.tiers(
        ["payments-primary", "sre-leads", REQUESTER, "payments-primary", CAROL], REQUESTER, NOW
    )
    # Consecutive listed user ids form one tier; a repeated entry counts once.
    assert [t.users for t in tiers] == [(ALICE,), (BOB,), (CAROL,)]
    assert all(REQUESTER not in t.users for t in tiers)
    only_me = r.tiers(["sre-leads", REQUESTER], REQUESTER, NOW)
    assert [t.users for t in only_me] == [(BOB,), ()]
    assert only_me[1].note == "the requester cannot approve their own request"


def test_consecutive_listed_users_are_asked_together() -> None:
    r = resolver(FakeSource("sre-leads", (BOB,)))
    tiers = r.tiers([ALICE, CAROL, "sre-leads", DAVE], REQUESTER, NOW)
    assert [t.users for t in tiers] == [(ALICE, CAROL), (BOB,), (DAVE,)]


def test_an_unreachable_source_is_kept_empty_and_says_where_the_request_went() -> None:
    r = resolver(down(), FakeSource("sre-leads", (BOB,)))
    platform, leads = r.tiers(["platform", "sre-leads"], REQUESTER, NOW)
    assert platform == ApproverTier(
        "platform", (), "PagerDuty unreachable (HTTP 503): fell back to the next source (sre-leads)"
    )
    assert leads == ApproverTier("sre-leads", (BOB,), None)


def test_fallback_names_the_next_tier_that_has_someone() -> None:
    r = resolver(down(), FakeSource("payments-primary"), FakeSource("sre-leads", (BOB,)))
    tiers = r.tiers(["platform", "payments-primary", "sre-leads"], REQUESTER, NOW)
    assert [t.note for t in tiers] == [
        "PagerDuty unreachable (HTTP 503): fell back to the next source (sre-leads)",
        "nobody on call: fell back to the next source (sre-leads)",
        None,
    ]


def test_an_empty_tier_with_nothing_after_it_just_says_why() -> None:
    r = resolver(FakeSource("sre-leads", (BOB,)), down(), FakeSource("payments-primary"))
    tiers = r.tiers(["sre-leads", "platform", "payments-primary"], REQUESTER, NOW)
    assert [t.note for t in tiers] == [None, "PagerDuty unreachable (HTTP 503)", "nobody on call"]


def test_only_the_requester_on_call_is_said_so() -> None:
    r = resolver(FakeSource("payments-primary", (REQUESTER,)))
    assert r.tiers(["payments-primary", ALICE], REQUESTER, NOW)[0] == ApproverTier(
        "payments-primary",
        (),
        f"only the requester is on call: fell back to the next source ({ALICE})",
    )


def test_a_source_note_explains_an_empty_tier_and_is_kept_on_a_full_one() -> None:
    r = resolver(
        FakeSource("payments-primary", note="nobody on call (the rotation has not started)"),
        FakeSource("platform", (BOB,), note="no Slack account matches PD user Pat"),
    )
    first, second = r.tiers(["payments-primary", "platform"], REQUESTER, NOW)
    assert first.note == (
        "nobody on call (the rotation has not started): fell back to the next source (platform)"
    )
    assert second == ApproverTier("platform", (BOB,), "no Slack account matches PD user Pat")


def test_a_source_that_raises_unavailable_is_treated_as_unreachable() -> None:
    r = resolver(FakeSource("platform", raises=OnCallUnavailable("PagerDuty timed out")))
    assert r.tiers(["platform", ALICE], REQUESTER, NOW)[0].note == (
        f"PagerDuty timed out: fell back to the next source ({ALICE})"
    )


def test_a_source_that_raises_anything_else_is_not_swallowed() -> None:
    r = resolver(FakeSource("platform", raises=KeyError("bug")))
    with pytest.raises(KeyError):
        r.tiers(["platform"], REQUESTER, NOW)


def test_repeated_entries_and_repeated_users_count_once() -> None:
    r = resolver(FakeSource("sre-leads", (BOB, BOB, CAROL)))
    tiers = r.tiers(["sre-leads", ALICE, "sre-leads", ALICE], REQUESTER, NOW)
    assert tiers == [
        ApproverTier("sre-leads", (BOB, CAROL), None),
        ApproverTier(ALICE, (ALICE,), None),
    ]


def test_an_unknown_rotation_is_a_bug_not_an_empty_tier() -> None:
    with pytest.raises(UnknownApprover, match="nope"):
        resolver().tiers(["nope"], REQUESTER, NOW)
    with pytest.raises(UnknownApprover):
        resolver().may_approve(ALICE, ["nope"], REQUESTER, NOW)


# ---------------------------------------------------------------- may_approve


def static_rotation() -> StaticSource:
    return StaticSource(
        StaticRotation(
            name="payments-primary",
            timezone="Europe/Berlin",
            start=date(2026, 1, 5),
            shift="weekly",
            handoff=time(9, 0),
            members=(ALICE, BOB),
        )
    )


HANDOFF = datetime(2026, 1, 12, 8, 0, tzinfo=UTC)  # Monday 09:00 Berlin: Alice -> Bob


def test_only_whoever_is_on_call_at_the_click_may_approve() -> None:
    r = resolver(static_rotation())
    entries = ["payments-primary"]
    just_before = HANDOFF - timedelta(minutes=1)
    assert r.may_approve(ALICE, entries, REQUESTER, just_before)
    assert not r.may_approve(BOB, entries, REQUESTER, just_before)
    assert not r.may_approve(ALICE, entries, REQUESTER, HANDOFF)
    assert r.may_approve(BOB, entries, REQUESTER, HANDOFF)


def test_the_running_clock_decides_across_a_dst_handoff() -> None:
    """Through the clock the bot runs with (SystemClock), frozen either side of a handoff that
    falls on the spring DST change in Berlin (Monday 30 March 2026 09:00 CEST = 07:00 UTC)."""
    r = resolver(
        StaticSource(
            StaticRotation(
                name="payments-primary",
                timezone="Europe/Berlin",
                start=date(2026, 3, 2),
                shift="weekly",
                handoff=time(9, 0),
                members=(ALICE, BOB, CAROL, DAVE),
            )
        )
    )
    entries = ["payments-primary"]
    with freeze_time("2026-03-30T06:59:00Z"):  # 08:59 CEST: still the week of 23 March
        assert [t.users for t in r.tiers(entries, REQUESTER, SystemClock().now())] == [(DAVE,)]
    with freeze_time("2026-03-30T07:00:00Z"):  # 09:00 CEST: a new week, back to members[0]
        now = SystemClock().now()
        assert [t.users for t in r.tiers(entries, REQUESTER, now)] == [(ALICE,)]
        assert r.may_approve(ALICE, entries, REQUESTER, now)
        assert not r.may_approve(DAVE, entries, REQUESTER, now)


def test_a_listed_user_id_always_counts_without_asking_any_source() -> None:
    platform = down()
    r = resolver(platform)
    assert r.may_approve(CAROL, ["platform", CAROL], REQUESTER, NOW)
    assert platform.asked == []


def test_the_requester_never_counts_even_when_listed_and_on_call() -> None:
    r = resolver(FakeSource("sre-leads", (REQUESTER, BOB)))
    assert not r.may_approve(REQUESTER, ["sre-leads", REQUESTER], REQUESTER, NOW)
    assert r.may_approve(BOB, ["sre-leads", REQUESTER], REQUESTER, NOW)


def test_nobody_else_counts_and_an_unreachable_source_vouches_for_nobody() -> None:
    r = resolver(down(), FakeSource("sre-leads", (BOB,)))
    assert not r.may_approve(DAVE, ["platform", "sre-leads", ALICE], REQUESTER, NOW)
    assert not r.may_approve(CAROL, ["platform"], REQUESTER, NOW)
    assert r.may_approve(BOB, ["platform", "sre-leads"], REQUESTER, NOW)


def test_static_source_says_nobody_before_the_rotation_starts() -> None:
    source = static_rotation()
    early = source.current(datetime(2026, 1, 1, tzinfo=UTC))
    assert early == OnCall(
        "payments-primary", (), note="nobody on call (the rotation has not started)"
    )
    assert source.current(HANDOFF) == OnCall("payments-primary", (BOB,))


# ---------------------------------------------------------------- Slack user groups


class FakeWebClient:
    """Answers ``usergroups.users.list`` from a dict; records calls; can fail."""

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self.calls: list[str] = []
        self.error: str | None = None
        self.network_down = False

    def usergroups_users_list(self, usergroup: str, **_: Any) -> dict[str, Any]:
        self.calls.append(usergroup)
        if self.network_down:
            raise ConnectionRefusedError("refused")
        if self.error:
            raise SlackApiError("failed", {"ok": False, "error": self.error})  # type: ignore[no-untyped-call]
        if usergroup not in self.groups:
            raise SlackApiError(  # type: ignore[no-untyped-call]
                "failed", {"ok": False, "error": "no_such_subteam"}
            )
        return {"ok": True, "users": list(self.groups[usergroup])}


def usergroup_source(client: FakeWebClient) -> UsergroupSource:
    return UsergroupSource("sre-leads", "S0SRELEADS", SlackUsergroups(client))  # type: ignore[arg-type]


def test_usergroup_members_are_on_call_and_cached_for_a_minute() -> None:
    client = FakeWebClient({"S0SRELEADS": [ALICE, BOB]})
    source = usergroup_source(client)
    assert source.current(NOW) == OnCall("sre-leads", (ALICE, BOB))
    client.groups["S0SRELEADS"] = [CAROL]
    assert source.current(NOW + timedelta(seconds=59)).users == (ALICE, BOB)
    assert client.calls == ["S0SRELEADS"]
    assert source.current(NOW + timedelta(seconds=60)).users == (CAROL,)
    assert len(client.calls) == 2


def test_an_earlier_instant_than_the_cached_one_is_asked_again() -> None:
    client = FakeWebClient({"S0SRELEADS": [ALICE]})
    source = usergroup_source(client)
    source.current(NOW)
    source.current(NOW - timedelta(seconds=1))
    assert len(client.calls) == 2


def test_an_empty_usergroup_is_nobody_on_call() -> None:
    source = usergroup_source(FakeWebClient({"S0SRELEADS": []}))
    assert source.current(NOW) == OnCall(
        "sre-leads", (), note="nobody in Slack user group S0SRELEADS"
    )


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing_scope", "missing_scope"),
        ("network", "ConnectionRefusedError"),
    ],
)
def test_a_usergroup_slack_cannot_list_is_unavailable_and_retried_later(
    setup: str, reason: str
) -> None:
    client = FakeWebClient({"S0SRELEADS": [ALICE]})
    if setup == "network":
        client.network_down = True
    else:
        client.error = setup
    source = usergroup_source(client)
    assert source.current(NOW) == OnCall(
        "sre-leads", (), available=False, note=f"Slack user group S0SRELEADS unavailable ({reason})"
    )
    client.error, client.network_down = None, False
    assert not source.current(NOW + timedelta(seconds=14)).available  # not asked again yet
    assert len(client.calls) == 1
    assert source.current(NOW + timedelta(seconds=15)).users == (ALICE,)


def test_in_any_group_answers_requesters_and_fails_closed() -> None:
    client = FakeWebClient({"S0SRE": [ALICE], "S0DBA": [BOB]})
    directory = SlackUsergroups(client, clock=lambda: NOW)  # type: ignore[arg-type]
    r = ApproverResolver({}, directory)
    assert r.in_any_group(BOB, ["S0SRE", "S0DBA"])
    assert not r.in_any_group(CAROL, ["S0SRE", "S0DBA"])
    assert not r.in_any_group(ALICE, ["S0GONE"])  # Slack says no_such_subteam
    assert r.in_any_group(ALICE, ["S0GONE", "S0SRE"])
    assert not ApproverResolver({}).in_any_group(ALICE, ["S0SRE"])


# ---------------------------------------------------------------- building sources


ROTATIONS = {
    "payments-primary": StaticRotationConfig.model_validate(
        {
            "type": "static",
            "timezone": "Europe/Berlin",
            "start": "2026-01-05",
            "shift": "weekly",
            "handoff": "09:00",
            "members": [ALICE, BOB],
        }
    ),
    "platform": PagerDutyRotationConfig.model_validate(
        {"type": "pagerduty", "escalation_policy_id": "PXYZ789", "escalation_level": 2}
    ),
    "sre-leads": UsergroupRotationConfig.model_validate(
        {"type": "usergroup", "usergroup": "S0SRELEADS"}
    ),
}


def test_build_sources_makes_one_source_per_rotation() -> None:
    client = FakeWebClient({"S0SRELEADS": [CAROL]})
    sources = build_sources(
        ROTATIONS,
        client,
        "pd-token-123456",  # type: ignore[arg-type]
        "http://pd.invalid/",
    )
    assert {name: type(s).__name__ for name, s in sources.items()} == {
        "payments-primary": "StaticSource",
        "platform": "PagerDutySource",
        "sre-leads": "UsergroupSource",
    }
    assert {name: s.name for name, s in sources.items()} == {n: n for n in ROTATIONS}
    platform = sources["platform"]
    assert isinstance(platform, PagerDutySource)
    assert (platform.escalation_policy_id, platform.escalation_level, platform.api_url) == (
        "PXYZ789",
        2,
        "http://pd.invalid",
    )
    assert sources["payments-primary"].current(HANDOFF).users == (BOB,)
    assert sources["sre-leads"].current(NOW).users == (CAROL,)


@pytest.mark.parametrize("token", [None, "", "   "])
def test_a_pagerduty_rotation_without_a_token_is_a_clear_error(token: str | None) -> None:
    with pytest.raises(OnCallConfigError, match="platform read PagerDuty, but PAGERDUTY_TOKEN"):
        build_sources(ROTATIONS, FakeWebClient({}), token, "https://api.pagerduty.com")  # type: ignore[arg-type]


def test_no_token_is_needed_without_pagerduty_rotations() -> None:
    rotations = {k: v for k, v in ROTATIONS.items() if k != "platform"}
    assert set(build_sources(rotations, FakeWebClient({}), None)) == set(rotations)  # type: ignore[arg-type]


def test_build_resolver_wires_rotations_and_user_groups() -> None:
    client = FakeWebClient({"S0SRELEADS": [CAROL]})
    r = build_resolver(ROTATIONS, client, "pd-token-123456")  # type: ignore[arg-type]
    assert set(r.sources) == set(ROTATIONS)
    assert r.in_any_group(CAROL, ["S0SRELEADS"])
    tiers = r.tiers(["payments-primary", "sre-leads"], REQUESTER, HANDOFF)
    assert [t.users for t in tiers] == [(BOB,), (CAROL,)]


def test_pagerduty_source_needs_one_target_and_a_token_and_hides_it() -> None:
    client: Any = FakeWebClient({})
    with pytest.raises(ValueError, match="exactly one"):
        PagerDutySource("p", token="pd-token-123456", slack_client=client)
    with pytest.raises(ValueError, match="exactly one"):
        PagerDutySource(
            "p",
            token="pd-token-123456",
            slack_client=client,
            schedule_id="PA",
            escalation_policy_id="PB",
        )
    with pytest.raises(ValueError, match="token"):
        PagerDutySource("p", token=" ", slack_client=client, schedule_id="PA")
    source = PagerDutySource(
        "p", token="pd-token-123456", slack_client=client, schedule_id="PABC123"
    )
    assert "pd-token-123456" not in repr(source)
    assert repr(source) == "PagerDutySource('p', schedule PABC123)"
