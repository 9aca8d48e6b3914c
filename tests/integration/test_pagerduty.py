"""The real PagerDutySource over real HTTP: the PagerDuty emulator for who is on call, the Slack
emulator for mapping emails to Slack users (it answers ``users.lookupByEmail`` for
``<user id in lowercase>@example.com``).

Covers lookup by schedule and by escalation policy level, the request PagerDuty expects
(token, version header, since/until, paging), the short cache, and outages: the source says
"unavailable" at once, the resolver falls back to the next approver source with a note, and
PagerDuty is asked again once the retry interval has passed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient

from bot.oncall.base import OnCall
from bot.oncall.pagerduty import ACCEPT, PagerDutySource
from bot.oncall.resolver import ApproverResolver, ApproverTier
from bot.oncall.usergroup import SlackUsergroups, UsergroupSource
from tests.emulators.pagerduty_api import PagerDutyEmulator
from tests.emulators.slack_api import SlackEmulator

pytestmark = pytest.mark.integration

NOW = datetime(2026, 2, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
REQUESTER = "U0REQ"


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyEmulator]:
    with PagerDutyEmulator() as emulator:
        for pd_id, slack_id in [
            ("PALICE", "U0ALICE"),
            ("PBOB", "U0BOB"),
            ("PCAROL", "U0CAROL"),
            ("PDAVE", "U0DAVE"),
            ("PERIN", "U0ERIN"),
        ]:
            emulator.add_user(pd_id, f"{slack_id.lower()}@example.com", name=pd_id.title())
        yield emulator


@pytest.fixture
def slack_client(slack: SlackEmulator) -> WebClient:
    return WebClient(token=slack.bot_token, base_url=slack.base_url)


def schedule_source(
    pagerduty: PagerDutyEmulator,
    slack_client: WebClient,
    schedule_id: str = "PSCHED1",
    **kwargs: float,
) -> PagerDutySource:
    return PagerDutySource(
        "platform",
        token=pagerduty.token,
        slack_client=slack_client,
        schedule_id=schedule_id,
        api_url=pagerduty.base_url,
        **kwargs,
    )  # type: ignore[arg-type]


def oncalls(pagerduty: PagerDutyEmulator) -> int:
    return len(pagerduty.calls("/oncalls"))


# ---------------------------------------------------------------- who is on call


def test_schedule_lookup_maps_pagerduty_users_to_slack_by_email(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1", start=NOW - DAY, end=NOW + DAY)
    pagerduty.add_oncall("PBOB", schedule_id="POTHER", start=NOW - DAY, end=NOW + DAY)
    pagerduty.add_oncall("PCAROL", schedule_id="PSCHED1", start=NOW - 3 * DAY, end=NOW - DAY)

    assert schedule_source(pagerduty, slack_client).current(NOW) == OnCall("platform", ("U0ALICE",))

    (call,) = pagerduty.calls("/oncalls")
    assert call.headers["authorized"] == "True"
    assert call.headers["accept"] == ACCEPT
    assert call.params["schedule_ids[]"] == ["PSCHED1"]
    assert call.param("since") == call.param("until") == "2026-02-02T12:00:00Z"
    assert "escalation_levels[]" not in call.params
    lookups = slack.calls("users.lookupByEmail")
    assert [c.params["email"] for c in lookups] == ["u0alice@example.com"]


def test_the_user_whose_shift_starts_now_is_on_call_and_the_one_ending_now_is_not(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1", start=NOW - DAY, end=NOW)
    pagerduty.add_oncall("PBOB", schedule_id="PSCHED1", start=NOW, end=NOW + DAY)
    assert schedule_source(pagerduty, slack_client).current(NOW).users == ("U0BOB",)


def test_escalation_policy_lookup_reads_one_level(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall(
        "PALICE", escalation_policy_id="PEP1", escalation_level=1, schedule_id="PSCHED1"
    )
    pagerduty.add_oncall("PBOB", escalation_policy_id="PEP1", escalation_level=2)
    pagerduty.add_oncall("PCAROL", escalation_policy_id="PEP2", escalation_level=2)
    source = PagerDutySource(
        "platform-l2",
        token=pagerduty.token,
        slack_client=slack_client,
        escalation_policy_id="PEP1",
        escalation_level=2,
        api_url=pagerduty.base_url,
    )
    assert source.current(NOW) == OnCall("platform-l2", ("U0BOB",))
    (call,) = pagerduty.calls("/oncalls")
    assert call.params["escalation_policy_ids[]"] == ["PEP1"]
    assert call.params["escalation_levels[]"] == ["2"]
    assert "schedule_ids[]" not in call.params


def test_a_user_on_call_through_several_policies_counts_once(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    for policy in ("PEP1", "PEP2", "PEP3"):
        pagerduty.add_oncall("PALICE", escalation_policy_id=policy, schedule_id="PSCHED1")
    assert schedule_source(pagerduty, slack_client).current(NOW).users == ("U0ALICE",)
    assert len(slack.calls("users.lookupByEmail")) == 1


def test_every_page_is_read(pagerduty: PagerDutyEmulator, slack_client: WebClient) -> None:
    pagerduty.max_limit = 2
    for pd_id in ("PALICE", "PBOB", "PCAROL", "PDAVE", "PERIN"):
        pagerduty.add_oncall(pd_id, schedule_id="PSCHED1")
    assert schedule_source(pagerduty, slack_client).current(NOW).users == (
        "U0ALICE",
        "U0BOB",
        "U0CAROL",
        "U0DAVE",
        "U0ERIN",
    )
    assert [c.param("offset") for c in pagerduty.calls("/oncalls")] == ["0", "2", "4"]


def test_the_email_comes_from_users_when_the_oncall_entry_lacks_it(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.honour_include = False
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    assert schedule_source(pagerduty, slack_client).current(NOW).users == ("U0ALICE",)
    assert [c.path for c in pagerduty.calls("/users/")] == ["/users/PALICE"]
    assert pagerduty.calls("/users/")[0].headers["authorized"] == "True"


def test_pagerduty_users_without_a_slack_account_are_left_out_with_a_note(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    slack.unknown_users.add("U0BOB")
    pagerduty.add_user("PGHOST", "ghost@elsewhere.test", name="Ghost")
    for pd_id in ("PALICE", "PBOB", "PGHOST"):
        pagerduty.add_oncall(pd_id, schedule_id="PSCHED1")
    answer = schedule_source(pagerduty, slack_client).current(NOW)
    assert answer == OnCall(
        "platform",
        ("U0ALICE",),
        note="no Slack account matches the email of PagerDuty user(s) Pbob, Ghost",
    )


def test_two_pagerduty_users_with_one_slack_account_count_once(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_user("PALICE2", "u0alice@example.com", name="Alice (second login)")
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    pagerduty.add_oncall("PALICE2", schedule_id="PSCHED1")
    assert schedule_source(pagerduty, slack_client).current(NOW).users == ("U0ALICE",)


def test_a_deactivated_slack_account_is_not_an_approver(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    slack.users["U0BOB"] = {"deleted": True}
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    pagerduty.add_oncall("PBOB", schedule_id="PSCHED1")
    answer = schedule_source(pagerduty, slack_client).current(NOW)
    assert answer.users == ("U0ALICE",)
    assert answer.note == "no Slack account matches the email of PagerDuty user(s) Pbob"


def test_entries_for_another_time_or_level_are_ignored_even_if_pagerduty_sends_them(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.filter_server_side = False
    pagerduty.add_oncall(
        "PALICE", escalation_policy_id="PEP1", escalation_level=1, start=NOW - DAY, end=NOW + DAY
    )
    pagerduty.add_oncall(
        "PBOB", escalation_policy_id="PEP1", escalation_level=2, start=NOW - DAY, end=NOW
    )
    pagerduty.add_oncall(
        "PCAROL",
        escalation_policy_id="PEP1",
        escalation_level=2,
        start=NOW + timedelta(seconds=1),
        end=NOW + DAY,
    )
    pagerduty.add_oncall(
        "PDAVE", escalation_policy_id="PEP1", escalation_level=2, start=NOW, end=NOW + DAY
    )
    source = PagerDutySource(
        "platform-l2",
        token=pagerduty.token,
        slack_client=slack_client,
        escalation_policy_id="PEP1",
        escalation_level=2,
        api_url=pagerduty.base_url,
    )
    assert source.current(NOW).users == ("U0DAVE",)


def test_nobody_on_call_is_an_available_empty_answer(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    assert schedule_source(pagerduty, slack_client).current(NOW) == OnCall(
        "platform", (), note="nobody on call in PagerDuty schedule PSCHED1"
    )


# ---------------------------------------------------------------- caching


def test_a_second_call_within_the_ttl_makes_no_http_call(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    source = schedule_source(pagerduty, slack_client)
    first = source.current(NOW)
    pagerduty.oncalls.clear()
    pagerduty.add_oncall("PBOB", schedule_id="PSCHED1")
    assert source.current(NOW + timedelta(seconds=59)) == first
    assert oncalls(pagerduty) == 1
    assert len(slack.calls("users.lookupByEmail")) == 1

    assert source.current(NOW + timedelta(seconds=60)).users == ("U0BOB",)
    assert oncalls(pagerduty) == 2


def test_the_slack_mapping_outlives_the_oncall_cache(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    source = schedule_source(pagerduty, slack_client)
    source.current(NOW)
    source.current(NOW + timedelta(minutes=5))
    assert oncalls(pagerduty) == 2
    assert len(slack.calls("users.lookupByEmail")) == 1


# ---------------------------------------------------------------- outages


@pytest.mark.parametrize(
    ("fault", "note"),
    [
        (503, "PagerDuty unreachable (HTTP 503)"),
        (500, "PagerDuty unreachable (HTTP 500)"),
        (429, "PagerDuty unreachable (HTTP 429)"),
    ],
)
def test_server_errors_and_rate_limits_are_unavailable(
    pagerduty: PagerDutyEmulator, slack_client: WebClient, fault: int, note: str
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    pagerduty.fail_next(fault)
    assert schedule_source(pagerduty, slack_client).current(NOW) == OnCall(
        "platform", (), available=False, note=note
    )


def test_a_timeout_is_unavailable(pagerduty: PagerDutyEmulator, slack_client: WebClient) -> None:
    pagerduty.delay = 1.0
    source = schedule_source(pagerduty, slack_client, timeout=0.2)
    assert source.current(NOW) == OnCall(
        "platform", (), available=False, note="PagerDuty unreachable (timed out)"
    )


def test_connection_refused_is_unavailable_and_recovers_after_retry_after(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    source = schedule_source(pagerduty, slack_client)
    pagerduty.stop()
    answer = source.current(NOW)
    assert not answer.available
    assert answer.note == "PagerDuty unreachable (ConnectionError)"
    pagerduty.start()  # same port
    assert not source.current(NOW + timedelta(seconds=14)).available
    assert source.current(NOW + timedelta(seconds=15)).users == ("U0ALICE",)


def test_a_wrong_token_is_refused_and_never_logged(
    pagerduty: PagerDutyEmulator, slack_client: WebClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "pd-wrong-token-abcdef"
    source = PagerDutySource(
        "platform",
        token=wrong,
        slack_client=slack_client,
        schedule_id="PSCHED1",
        api_url=pagerduty.base_url,
    )
    assert source.current(NOW) == OnCall(
        "platform", (), available=False, note="PagerDuty refused the bot's API token (HTTP 401)"
    )
    assert pagerduty.calls("/oncalls")[0].headers["authorized"] == "False"
    assert "refused the API token" in caplog.text
    assert wrong not in caplog.text
    assert pagerduty.token not in caplog.text


def test_an_unknown_schedule_is_unavailable_with_its_id(
    pagerduty: PagerDutyEmulator, slack_client: WebClient
) -> None:
    pagerduty.fail_next(404)
    assert schedule_source(pagerduty, slack_client, "PNOPE").current(NOW).note == (
        "PagerDuty has no schedule PNOPE (HTTP 404)"
    )


def test_slack_failing_to_map_users_makes_the_source_unavailable(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    slack.fail_next("users.lookupByEmail", "ratelimited")
    assert schedule_source(pagerduty, slack_client).current(NOW) == OnCall(
        "platform",
        (),
        available=False,
        note="Slack could not match PagerDuty users by email (ratelimited)",
    )


# ---------------------------------------------------------------- with the resolver


def resolver_with(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> tuple[ApproverResolver, PagerDutySource]:
    slack.usergroups["S0SRELEADS"] = ["U0DAVE", REQUESTER]
    platform = schedule_source(pagerduty, slack_client)
    leads = UsergroupSource("sre-leads", "S0SRELEADS", SlackUsergroups(slack_client))
    return ApproverResolver({"platform": platform, "sre-leads": leads}), platform


def test_an_outage_falls_back_to_the_next_tier_with_a_note_then_recovers(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1")
    resolver, _ = resolver_with(pagerduty, slack, slack_client)
    entries = ["platform", "sre-leads", "U0CAROL"]

    tiers = resolver.tiers(entries, REQUESTER, NOW)
    assert tiers[0] == ApproverTier("platform", ("U0ALICE",), None)
    assert [t.source for t in tiers[1:]] == ["sre-leads", "U0CAROL"]
    assert tiers[1].users == ("U0DAVE",)  # the requester is left out

    pagerduty.outage = True
    later = NOW + timedelta(seconds=30)
    assert resolver.tiers(entries, REQUESTER, later)[0].users == ("U0ALICE",)  # cached
    assert oncalls(pagerduty) == 1

    after_ttl = NOW + timedelta(seconds=61)
    assert resolver.tiers(entries, REQUESTER, after_ttl) == [
        ApproverTier(
            "platform",
            (),
            "PagerDuty unreachable (HTTP 503): fell back to the next source (sre-leads)",
        ),
        ApproverTier("sre-leads", ("U0DAVE",), None),
        ApproverTier("U0CAROL", ("U0CAROL",), None),
    ]
    assert oncalls(pagerduty) == 2

    pagerduty.outage = False
    recovered = after_ttl + timedelta(seconds=15)
    assert resolver.tiers(entries, REQUESTER, recovered)[0] == ApproverTier(
        "platform", ("U0ALICE",), None
    )
    assert oncalls(pagerduty) == 3


def test_a_click_counts_only_while_pagerduty_vouches_for_it(
    pagerduty: PagerDutyEmulator, slack: SlackEmulator, slack_client: WebClient
) -> None:
    pagerduty.add_oncall("PALICE", schedule_id="PSCHED1", end=NOW + timedelta(hours=1))
    pagerduty.add_oncall("PBOB", schedule_id="PSCHED1", start=NOW + timedelta(hours=1))
    resolver, _ = resolver_with(pagerduty, slack, slack_client)
    entries = ["platform", "U0CAROL"]
    assert resolver.may_approve("U0ALICE", entries, REQUESTER, NOW)
    assert not resolver.may_approve("U0BOB", entries, REQUESTER, NOW)
    handoff = NOW + timedelta(hours=1)
    assert not resolver.may_approve("U0ALICE", entries, REQUESTER, handoff)
    assert resolver.may_approve("U0BOB", entries, REQUESTER, handoff)

    pagerduty.outage = True
    outage = handoff + timedelta(minutes=5)
    assert not resolver.may_approve("U0BOB", entries, REQUESTER, outage)
    assert resolver.may_approve("U0CAROL", entries, REQUESTER, outage)
