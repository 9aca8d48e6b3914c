"""Validating a request against the policy, the request state machine, and who may act."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from bot.domain.durations import DurationError
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.permissions import check_may_decide, check_may_end, eligible_approvers
from bot.domain.requests import (
    ALLOWED_TRANSITIONS,
    MAX_REASON_LENGTH,
    MIN_REASON_LENGTH,
    ReasonError,
    RequestStatus,
    UnknownResource,
    ValidRequest,
    check_transition,
    clean_reason,
    validate_request,
)
from bot.policy import parse_policy
from tests.unit.fakes import APPROVER, BYSTANDER, EXAMPLE_POLICY, OTHER_APPROVER, REQUESTER

RESOURCES = parse_policy(EXAMPLE_POLICY).resources
S = RequestStatus

# -- validate_request ------------------------------------------------------------------------------


def test_valid_request() -> None:
    valid = validate_request(RESOURCES, "payments-db", "30m", "INC-4211 checkout errors")
    assert valid == ValidRequest("payments-db", timedelta(minutes=30), "INC-4211 checkout errors")


@pytest.mark.parametrize("duration_text", [None, "", "   "])
def test_missing_duration_uses_the_default(duration_text: str | None) -> None:
    valid = validate_request(RESOURCES, "payments-db", duration_text, "INC-1 x")
    assert valid.duration == RESOURCES["payments-db"].default_duration == timedelta(hours=1)


def test_missing_duration_without_default_is_refused() -> None:
    with pytest.raises(DurationError, match="Say how long") as info:
        validate_request(RESOURCES, "orders-logs", None, "INC-1 x")
    assert "at most 2h" in str(info.value)


@pytest.mark.parametrize("name", ["nope", "PAYMENTS-DB", "payments-db ", "help"])
def test_unknown_resource_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(UnknownResource) as info:
        validate_request(RESOURCES, name, "30m", "INC-1 x")
    message = str(info.value)
    assert "Unknown resource" in message
    for known in RESOURCES:
        assert f"`{known}`" in message


@pytest.mark.parametrize(
    "hostile",
    [
        "<!channel>",
        "<@U0ADMIN>",
        "<https://evil.example|click here>",
        "`a`*b*_c_~d~",
        "x\u202eevil",
        "a\x00b\x07c",
        "<" * 300,
    ],
)
def test_unknown_resource_quotes_hostile_names_safely(hostile: str) -> None:
    with pytest.raises(UnknownResource) as info:
        validate_request(RESOURCES, hostile, "30m", "INC-1 x")
    quoted = str(info.value).split("You can ask for")[0]
    for ch in "<>*_~|":
        assert ch not in quoted
    assert quoted.count("`") == 2  # just the code span around the (cleaned) name
    assert "\u202e" not in quoted and "\x00" not in quoted and "\x07" not in quoted


def test_unknown_resource_is_checked_before_duration_and_reason() -> None:
    with pytest.raises(UnknownResource):
        validate_request(RESOURCES, "nope", "not-a-duration", "")


def test_duration_is_checked_against_the_resource_max() -> None:
    assert validate_request(RESOURCES, "payments-db", "4h", "INC-1 x").duration == timedelta(
        hours=4
    )
    with pytest.raises(DurationError, match="at most 2h"):
        validate_request(RESOURCES, "orders-logs", "4h", "INC-1 x")


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("INC-4211 checkout errors", "INC-4211 checkout errors"),
        ("  padded  ", "padded"),
        ("line one\nline two\r\nline three", "line one line two line three"),
        ("tabs\tand\t\tmore", "tabs and more"),
        ("bell\x07and\x00nul", "bell and nul"),
        ("bidi\u202eoverride", "bidi override"),
        ("zero\u200bwidth", "zero width"),
        ("line\u2028sep\u2029para", "line sep para"),
        ("abc", "abc"),
        ("héllo wörld ✓", "héllo wörld ✓"),
        # escaping is the renderer's job: markup is stored verbatim
        ("<!channel> & <@U0ADMIN>", "<!channel> & <@U0ADMIN>"),
    ],
)
def test_clean_reason(raw: str, clean: str) -> None:
    assert clean_reason(raw) == clean
    assert validate_request(RESOURCES, "payments-db", "30m", raw).reason == clean


@pytest.mark.parametrize("raw", ["", "  ", "ab", "\n\n\n", "a\x00", "\u200b\u200b\u200b"])
def test_reason_too_short(raw: str) -> None:
    with pytest.raises(ReasonError, match="Please give a reason"):
        validate_request(RESOURCES, "payments-db", "30m", raw)


def test_reason_length_bounds_are_inclusive() -> None:
    assert clean_reason("a" * MIN_REASON_LENGTH) == "a" * MIN_REASON_LENGTH
    assert clean_reason("a" * MAX_REASON_LENGTH) == "a" * MAX_REASON_LENGTH
    with pytest.raises(ReasonError, match=f"{MAX_REASON_LENGTH + 1} characters"):
        clean_reason("a" * (MAX_REASON_LENGTH + 1))


def test_reason_length_counts_after_collapsing_whitespace() -> None:
    raw = "a" + " \n\t " * 1000 + "b"
    assert clean_reason(raw) == "a b"


def test_request_errors_are_user_errors() -> None:
    for error in (UnknownResource, ReasonError, DurationError, Conflict, NotAllowed):
        assert issubclass(error, UserError)


# -- the state machine -----------------------------------------------------------------------------

ALLOWED = sorted((a, b) for a, targets in ALLOWED_TRANSITIONS.items() for b in targets)
DISALLOWED = sorted(
    (a, b)
    for a, b in itertools.product(RequestStatus, RequestStatus)
    if b not in ALLOWED_TRANSITIONS[a]
)


def test_the_documented_transitions() -> None:
    assert set(ALLOWED) == {
        (S.PENDING, S.APPROVED),
        (S.PENDING, S.DENIED),
        (S.PENDING, S.WITHDRAWN),
        (S.PENDING, S.EXPIRED),
        (S.APPROVED, S.ACTIVE),
        (S.APPROVED, S.FAILED),
        (S.APPROVED, S.ENDED),  # an approved extension renews its parent and is done
        (S.ACTIVE, S.REVOKING),
        (S.REVOKING, S.ENDED),
    }
    assert set(ALLOWED_TRANSITIONS) == set(RequestStatus)


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transition(current: RequestStatus, target: RequestStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(("current", "target"), DISALLOWED)
def test_disallowed_transition(current: RequestStatus, target: RequestStatus) -> None:
    with pytest.raises(Conflict) as info:
        check_transition(current, target)
    assert current.label in str(info.value)
    assert target.label in str(info.value)


@pytest.mark.parametrize("status", [S.ENDED, S.DENIED, S.FAILED, S.WITHDRAWN, S.EXPIRED])
def test_terminal_states(status: RequestStatus) -> None:
    assert not ALLOWED_TRANSITIONS[status]
    assert not status.is_open


@pytest.mark.parametrize("status", [S.PENDING, S.APPROVED, S.ACTIVE, S.REVOKING])
def test_open_states_can_move(status: RequestStatus) -> None:
    assert ALLOWED_TRANSITIONS[status]
    assert status.is_open


@pytest.mark.parametrize("status", list(RequestStatus))
def test_no_state_moves_to_itself_or_back_to_pending(status: RequestStatus) -> None:
    assert status not in ALLOWED_TRANSITIONS[status]
    assert S.PENDING not in ALLOWED_TRANSITIONS[status]


def test_an_active_grant_cannot_end_without_revoking() -> None:
    with pytest.raises(Conflict):
        check_transition(S.ACTIVE, S.ENDED)


def test_every_status_has_a_distinct_label() -> None:
    labels = [status.label for status in RequestStatus]
    assert len(set(labels)) == len(labels)


# -- permissions -----------------------------------------------------------------------------------

APPROVERS = ("U0ALICE", "U0BOB")


def test_an_approver_may_decide() -> None:
    check_may_decide(APPROVER, REQUESTER, APPROVERS)
    check_may_decide(OTHER_APPROVER, REQUESTER, APPROVERS)


def test_self_approval_is_refused_even_for_an_approver() -> None:
    with pytest.raises(NotAllowed, match="your own request"):
        check_may_decide(APPROVER, APPROVER, APPROVERS)


@pytest.mark.parametrize("actor", [BYSTANDER, "", "u0alice", "U0ALIC", "U0ALICE "])
def test_bystanders_may_not_decide(actor: str) -> None:
    with pytest.raises(NotAllowed, match="Only the approvers"):
        check_may_decide(actor, REQUESTER, APPROVERS)


def test_nobody_decides_without_approvers() -> None:
    with pytest.raises(NotAllowed):
        check_may_decide(APPROVER, REQUESTER, ())


@pytest.mark.parametrize("actor", [REQUESTER, APPROVER, OTHER_APPROVER])
def test_requester_and_approvers_may_end(actor: str) -> None:
    check_may_end(actor, REQUESTER, APPROVERS)


@pytest.mark.parametrize("actor", [BYSTANDER, "", "u0carol"])
def test_bystanders_may_not_end(actor: str) -> None:
    with pytest.raises(NotAllowed, match="Only the requester or an approver"):
        check_may_end(actor, REQUESTER, APPROVERS)


@pytest.mark.parametrize(
    ("requester", "approvers", "eligible"),
    [
        (REQUESTER, ("U0ALICE", "U0BOB"), ["U0ALICE", "U0BOB"]),
        ("U0ALICE", ("U0ALICE", "U0BOB"), ["U0BOB"]),
        ("U0ALICE", ("U0ALICE",), []),
        (REQUESTER, ("U0BOB", "U0ALICE", "U0BOB"), ["U0BOB", "U0ALICE"]),  # order kept, deduped
    ],
)
def test_eligible_approvers(
    requester: str, approvers: tuple[str, ...], eligible: list[str]
) -> None:
    assert eligible_approvers(requester, approvers) == eligible
