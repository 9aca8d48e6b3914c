"""The pure rules behind approvals: the extend / --break-glass grammar, counting N approvals, how
far an extension may go, break-glass limits, who may ask, and the policy keys that configure it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import yaml

from bot.domain.approvals import Tally, tally_after
from bot.domain.commands import (
    BREAK_GLASS_FLAG,
    ExtendGrant,
    RequestAccess,
    UsageError,
    parse_command,
)
from bot.domain.durations import DurationError
from bot.domain.errors import Conflict, NotAllowed, UserError
from bot.domain.permissions import check_may_request
from bot.domain.requests import extension_limit, validate_break_glass
from bot.policy import Policy, PolicyError, parse_policy
from tests.unit.fakes import EXAMPLE_POLICY, START

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
SOURCE = "policy.yml"
DB = "resources.payments-db"
Raw = dict[str, Any]

# -- parse_command: extend -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("extend 42 30m", ExtendGrant(42, "30m")),
        ("extend #42 1h", ExtendGrant(42, "1h")),
        ("EXTEND 7 1h30m", ExtendGrant(7, "1h30m")),
        ("  extend   #9   15m  ", ExtendGrant(9, "15m")),
        # The duration is parsed by the lifecycle against the resource, not by the grammar.
        ("extend 3 soon", ExtendGrant(3, "soon")),
    ],
)
def test_extend(text: str, expected: ExtendGrant) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("extend", "Usage: `/debug-access extend <id> <duration>`"),
        ("extend 42", "Usage: `/debug-access extend <id> <duration>`"),
        ("extend 42 30m please", "Usage: `/debug-access extend <id> <duration>`"),
        ("extend 42 30m --break-glass", "Usage: `/debug-access extend <id> <duration>`"),
        ("extend abc 30m", "is not a request id"),
        ("extend -1 30m", "is not a request id"),
        ("extend # 30m", "is not a request id"),
        ("extend 4.2 30m", "is not a request id"),
    ],
)
def test_bad_extend_usage(text: str, problem: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_command(text)
    assert problem in str(info.value)


# -- parse_command: --break-glass ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "--break-glass payments-db 30m INC-1 db down",
        "payments-db --break-glass 30m INC-1 db down",
        "payments-db 30m --break-glass INC-1 db down",
        "payments-db 30m INC-1 --break-glass db down",
        "payments-db 30m INC-1 db down --break-glass",
        "payments-db 30m INC-1 db down --BREAK-GLASS",
        "payments-db 30m --Break-Glass INC-1 db down",
        "payments-db 30m --break-glass INC-1 --break-glass db down",
    ],
)
def test_break_glass_flag_anywhere_is_stripped_from_the_reason(text: str) -> None:
    assert parse_command(text) == RequestAccess(
        resource="payments-db", duration_text="30m", reason="INC-1 db down", break_glass=True
    )


def test_break_glass_with_the_default_duration() -> None:
    assert parse_command("payments-db --break-glass INC-1 db down") == RequestAccess(
        resource="payments-db", duration_text=None, reason="INC-1 db down", break_glass=True
    )


@pytest.mark.parametrize(
    "text",
    [
        "payments-db 30m INC-1 db down",
        "payments-db 30m INC-1 break-glass",
        "payments-db 30m INC-1 -break-glass",
        "payments-db 30m INC-1 --break-glass=yes",
    ],
)
def test_without_the_exact_flag_there_is_no_break_glass(text: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, RequestAccess)
    assert parsed.break_glass is False
    assert parsed.reason == " ".join(text.split()[2:])


@pytest.mark.parametrize(
    "text", ["--break-glass", " --BREAK-GLASS ", "--break-glass --break-glass"]
)
def test_break_glass_alone_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_command(text)
    assert "Usage:" in str(info.value) and BREAK_GLASS_FLAG in str(info.value)


@pytest.mark.parametrize("text", ["payments-db --break-glass", "--break-glass payments-db"])
def test_break_glass_without_a_reason_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="Missing reason"):
        parse_command(text)


# -- tally_after -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("so_far", "actor", "required", "approvals", "complete", "progress"),
    [
        ([], "U0A", 1, 1, True, ""),
        ([], "U0A", 2, 1, False, "1 of 2 approvals"),
        (["U0A"], "U0B", 2, 2, True, "2 of 2 approvals"),
        (["U0A"], "U0B", 3, 2, False, "2 of 3 approvals"),
        (["U0A", "U0B"], "U0C", 3, 3, True, "3 of 3 approvals"),
        ([], "U0A", 10, 1, False, "1 of 10 approvals"),
    ],
)
def test_tally_after(
    so_far: list[str], actor: str, required: int, approvals: int, complete: bool, progress: str
) -> None:
    tally = tally_after(so_far, actor, required)
    assert tally == Tally(approvals=approvals, required=required)
    assert tally.complete is complete
    assert tally.progress == progress


@pytest.mark.parametrize("required", [1, 2, 3])
def test_the_same_approver_cannot_count_twice(required: int) -> None:
    with pytest.raises(Conflict, match="already approved"):
        tally_after(["U0A"], "U0A", required)


def test_a_repeated_earlier_approver_counts_once() -> None:
    assert tally_after(["U0A", "U0A"], "U0B", 3) == Tally(approvals=2, required=3)


@pytest.mark.parametrize(
    ("approvals", "required", "complete"),
    [(0, 1, False), (1, 1, True), (1, 2, False), (2, 2, True), (3, 2, True)],
)
def test_tally_complete_at_n(approvals: int, required: int, complete: bool) -> None:
    assert Tally(approvals, required).complete is complete


# -- extension_limit -------------------------------------------------------------------------------

ISSUED = START
MAX = 4 * HOUR


@pytest.mark.parametrize(
    ("expires_after", "extra", "new_expiry_after"),
    [
        (HOUR, 3 * HOUR, 4 * HOUR),  # exactly up to max_duration in total
        (HOUR, 30 * MINUTE, HOUR + 30 * MINUTE),
        (3 * HOUR + 59 * MINUTE, MINUTE, 4 * HOUR),
    ],
)
def test_extension_within_the_total_is_allowed(
    expires_after: timedelta, extra: timedelta, new_expiry_after: timedelta
) -> None:
    assert extension_limit(ISSUED, ISSUED + expires_after, extra, MAX) == ISSUED + new_expiry_after


@pytest.mark.parametrize(
    ("expires_after", "extra", "room"),
    [
        (HOUR, 3 * HOUR + timedelta(seconds=1), "3h"),
        (HOUR, 4 * HOUR, "3h"),
        (3 * HOUR + 30 * MINUTE, HOUR, "30m"),
        (3 * HOUR + 59 * MINUTE, 2 * MINUTE, "1m"),
    ],
)
def test_extension_past_the_total_says_how_much_room_is_left(
    expires_after: timedelta, extra: timedelta, room: str
) -> None:
    with pytest.raises(DurationError) as info:
        extension_limit(ISSUED, ISSUED + expires_after, extra, MAX)
    assert f"at most {room} more can be granted" in str(info.value)
    assert "4h in total" in str(info.value)


@pytest.mark.parametrize(
    "expires_after", [MAX, MAX - timedelta(seconds=30), MAX + timedelta(seconds=1)]
)
def test_extension_of_a_grant_already_at_the_maximum(expires_after: timedelta) -> None:
    with pytest.raises(DurationError) as info:
        extension_limit(ISSUED, ISSUED + expires_after, MINUTE, MAX)
    message = str(info.value)
    assert "already at the resource's 4h maximum" in message
    assert "more can be granted" not in message


# -- validate_break_glass --------------------------------------------------------------------------

BREAK_GLASS_POLICY = parse_policy(
    EXAMPLE_POLICY.replace(
        "    approvers: [U0ALICE, U0BOB]\n",
        "    approvers: [U0ALICE, U0BOB]\n    break_glass:\n      max_duration: 30m\n",
    )
)


def test_break_glass_policy_fixture() -> None:
    glass = BREAK_GLASS_POLICY.resources["payments-db"].break_glass
    assert glass is not None and glass.max_duration == 30 * MINUTE
    assert BREAK_GLASS_POLICY.resources["orders-logs"].break_glass is None


@pytest.mark.parametrize("duration", [MINUTE, 29 * MINUTE, 30 * MINUTE])
def test_break_glass_up_to_its_maximum_is_allowed(duration: timedelta) -> None:
    validate_break_glass("payments-db", BREAK_GLASS_POLICY.resources["payments-db"], duration)


@pytest.mark.parametrize("duration", [30 * MINUTE + timedelta(seconds=1), HOUR])
def test_break_glass_over_its_maximum_is_refused(duration: timedelta) -> None:
    with pytest.raises(DurationError, match="lasts at most 30m"):
        validate_break_glass("payments-db", BREAK_GLASS_POLICY.resources["payments-db"], duration)


@pytest.mark.parametrize("duration", [MINUTE, HOUR])
def test_break_glass_where_the_policy_does_not_allow_it(duration: timedelta) -> None:
    with pytest.raises(UserError) as info:
        validate_break_glass("orders-logs", BREAK_GLASS_POLICY.resources["orders-logs"], duration)
    assert not isinstance(info.value, DurationError)
    assert "`orders-logs` has no break-glass access" in str(info.value)


# -- check_may_request -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "allowed", "groups"),
    [
        ("U0ANYONE", (), ()),
        ("U0ANYONE", (), ("S0OTHER",)),
        ("U0CAROL", ("U0CAROL",), ()),
        ("U0CAROL", ("U0DAVE", "U0CAROL"), ()),
        ("U0CAROL", ("S0SRE",), ("S0SRE",)),
        ("U0CAROL", ("U0DAVE", "S0SRE"), ("S0DEV", "S0SRE")),
    ],
)
def test_may_request(user: str, allowed: tuple[str, ...], groups: tuple[str, ...]) -> None:
    check_may_request(user, "payments-db", allowed, groups)


@pytest.mark.parametrize(
    ("user", "allowed", "groups"),
    [
        ("U0MALLORY", ("U0CAROL",), ()),
        ("U0MALLORY", ("S0SRE",), ()),
        ("U0MALLORY", ("S0SRE",), ("S0DEV",)),
        ("u0carol", ("U0CAROL",), ()),
        ("U0CARO", ("U0CAROL",), ()),
    ],
)
def test_may_not_request(user: str, allowed: tuple[str, ...], groups: tuple[str, ...]) -> None:
    with pytest.raises(NotAllowed) as info:
        check_may_request(user, "payments-db", allowed, groups)
    assert "`payments-db`" in str(info.value) and "requesters" in str(info.value)


# -- policy validation of the approval keys --------------------------------------------------------


def _raw() -> Raw:
    return copy.deepcopy(yaml.safe_load(EXAMPLE_POLICY))


def _with(**keys: Any) -> Callable[[Raw], None]:
    def apply(raw: Raw) -> None:
        raw["resources"]["payments-db"].update(keys)

    return apply


def _parse(mutate: Callable[[Raw], None]) -> Policy:
    raw = _raw()
    mutate(raw)
    return parse_policy(yaml.safe_dump(raw), SOURCE)


def test_defaults_of_the_approval_keys() -> None:
    db = parse_policy(EXAMPLE_POLICY, SOURCE).resources["payments-db"]
    assert (
        db.approvals_required,
        db.escalate_after,
        db.pending_ttl,
        db.requesters,
        db.break_glass,
    ) == (1, None, HOUR, (), None)


VALID: list[tuple[str, Callable[[Raw], None], str, object]] = [
    ("one approval", _with(approvals_required=1), "approvals_required", 1),
    ("ten approvals", _with(approvals_required=10), "approvals_required", 10),
    (
        "escalate just before expiry",
        _with(escalate_after="59m", pending_ttl="1h"),
        "escalate_after",
        timedelta(minutes=59),
    ),
    ("longer pending_ttl", _with(pending_ttl="2h"), "pending_ttl", 2 * HOUR),
    (
        "break-glass equal to max",
        _with(break_glass={"max_duration": "4h"}),
        "break_glass",
        timedelta(hours=4),
    ),
    (
        "user, enterprise user and group requesters",
        _with(requesters=["U0CAROL", "W0DAVE", "S0SRE"]),
        "requesters",
        ("U0CAROL", "W0DAVE", "S0SRE"),
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "value"), [case[1:] for case in VALID], ids=[case[0] for case in VALID]
)
def test_valid_approval_keys(mutate: Callable[[Raw], None], key: str, value: object) -> None:
    db = _parse(mutate).resources["payments-db"]
    got = getattr(db, key)
    if key == "break_glass":
        got = got.max_duration
    assert got == value


INVALID: list[tuple[str, Callable[[Raw], None], str, str]] = [
    (
        "zero approvals",
        _with(approvals_required=0),
        f"{DB}.approvals_required",
        "greater than or equal to 1",
    ),
    (
        "negative approvals",
        _with(approvals_required=-1),
        f"{DB}.approvals_required",
        "greater than or equal to 1",
    ),
    (
        "eleven approvals",
        _with(approvals_required=11),
        f"{DB}.approvals_required",
        "less than or equal to 10",
    ),
    (
        "approvals as text",
        _with(approvals_required="two"),
        f"{DB}.approvals_required",
        "valid integer",
    ),
    (
        "escalate equal to pending_ttl",
        _with(escalate_after="1h"),
        DB,
        "escalate_after must be shorter than pending_ttl",
    ),
    (
        "escalate after pending_ttl",
        _with(escalate_after="2h", pending_ttl="1h"),
        DB,
        "escalate_after must be shorter than pending_ttl",
    ),
    ("escalate without unit", _with(escalate_after=600), f"{DB}.escalate_after", "with a unit"),
    (
        "break-glass over max",
        _with(break_glass={"max_duration": "4h1m"}),
        DB,
        "break_glass.max_duration must be between 1m and max_duration",
    ),
    (
        "break-glass under a minute",
        _with(break_glass={"max_duration": "30s"}),
        DB,
        "break_glass.max_duration must be between 1m and max_duration",
    ),
    (
        "break-glass without max",
        _with(break_glass={}),
        f"{DB}.break_glass.max_duration",
        "Field required",
    ),
    (
        "break-glass unknown key",
        _with(break_glass={"max_duration": "1h", "notify": "x"}),
        f"{DB}.break_glass.notify",
        "Extra inputs are not permitted",
    ),
    (
        "requester lowercase",
        _with(requesters=["u0carol"]),
        f"{DB}.requesters",
        "'u0carol' is neither a Slack user id nor a user group id",
    ),
    (
        "requester channel",
        _with(requesters=["C0APPROVALS"]),
        f"{DB}.requesters",
        "'C0APPROVALS' is neither a Slack user id nor a user group id",
    ),
    (
        "requester mention",
        _with(requesters=["U0CAROL", "<@U0DAVE>"]),
        f"{DB}.requesters",
        "'<@U0DAVE>' is neither",
    ),
    (
        "requester rotation name",
        _with(requesters=["sre-oncall"]),
        f"{DB}.requesters",
        "'sre-oncall' is neither",
    ),
    (
        "requester email",
        _with(requesters=["carol@example.com"]),
        f"{DB}.requesters",
        "is neither a Slack user id nor a user group id",
    ),
    (
        "undefined rotation approver",
        _with(approvers=["U0ALICE", "payments-oncall"]),
        f"{DB}.approvers",
        "'payments-oncall' is not a Slack user id (like U0123ABCD) or a rotation defined under "
        "`rotations:`",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "key", "problem"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_approval_keys_name_file_key_and_problem(
    mutate: Callable[[Raw], None], key: str, problem: str
) -> None:
    with pytest.raises(PolicyError) as info:
        _parse(mutate)
    lines = str(info.value).splitlines()
    assert any(line.startswith(f"{SOURCE}: {key}: ") and problem in line for line in lines), lines
    assert all(line.startswith(f"{SOURCE}: ") for line in lines)


def test_approvers_naming_a_defined_rotation_are_accepted() -> None:
    def mutate(raw: Raw) -> None:
        raw["rotations"] = {"payments-oncall": {"type": "usergroup", "usergroup": "S0PAYONCALL"}}
        raw["resources"]["payments-db"]["approvers"] = ["payments-oncall", "U0ALICE"]

    policy = _parse(mutate)
    assert policy.resources["payments-db"].approvers == ("payments-oncall", "U0ALICE")


def test_rotation_defined_under_another_name_does_not_count() -> None:
    def mutate(raw: Raw) -> None:
        raw["rotations"] = {"orders-oncall": {"type": "usergroup", "usergroup": "S0ORDERS"}}
        raw["resources"]["payments-db"]["approvers"] = ["payments-oncall"]

    with pytest.raises(PolicyError) as info:
        _parse(mutate)
    assert f"{SOURCE}: {DB}.approvers: 'payments-oncall' is not" in str(info.value)


def test_undefined_rotation_is_refused_without_parse_policy_too() -> None:
    """Policy.model_validate without the rotations context still refuses it (the safety net)."""
    raw = _raw()
    raw["resources"]["payments-db"]["approvers"] = ["payments-oncall"]
    with pytest.raises(ValueError, match=r"resources\.payments-db\.approvers: 'payments-oncall'"):
        Policy.model_validate(raw)
