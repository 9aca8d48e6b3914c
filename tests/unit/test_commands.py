"""The grammar of ``/debug-access``."""

from __future__ import annotations

import pytest

from bot.domain.commands import (
    SUBCOMMANDS,
    ListMine,
    LockUser,
    OpenRequestForm,
    RequestAccess,
    RevokeGrant,
    ShowHelp,
    UnlockUser,
    UsageError,
    parse_command,
    parse_request_id,
)
from bot.domain.durations import DurationError
from bot.domain.errors import UserError
from bot.domain.requests import ReasonError, UnknownResource, validate_request
from bot.policy import parse_policy
from tests.unit.fakes import EXAMPLE_POLICY

RESOURCES = parse_policy(EXAMPLE_POLICY).resources


@pytest.mark.parametrize("text", ["", " ", "\t\n"])
def test_empty_opens_the_form(text: str) -> None:
    assert parse_command(text) == OpenRequestForm()


@pytest.mark.parametrize("text", ["help", "HELP", "  Help ", "help me please"])
def test_help(text: str) -> None:
    assert parse_command(text) == ShowHelp()


@pytest.mark.parametrize("text", ["list", "LIST", " list "])
def test_list(text: str) -> None:
    assert parse_command(text) == ListMine()


def test_list_takes_no_arguments() -> None:
    with pytest.raises(UsageError, match="takes no arguments"):
        parse_command("list all")


@pytest.mark.parametrize(
    ("text", "request_id"),
    [("revoke 42", 42), ("revoke #42", 42), ("REVOKE 7", 7), ("revoke  #0001 ", 1)],
)
def test_revoke(text: str, request_id: int) -> None:
    assert parse_command(text) == RevokeGrant(request_id)


@pytest.mark.parametrize("text", ["revoke", "revoke 1 2", "revoke 42 because"])
def test_revoke_needs_exactly_one_id(text: str) -> None:
    with pytest.raises(UsageError, match="Usage: `/debug-access revoke <id>`"):
        parse_command(text)


@pytest.mark.parametrize(
    "text",
    [
        "revoke abc",
        "revoke -1",
        "revoke 4.2",
        "revoke #",
        "revoke 1234567890123",
        "revoke <!channel>",
    ],
)
def test_revoke_with_a_bad_id(text: str) -> None:
    with pytest.raises(UsageError, match="is not a request id") as info:
        parse_command(text)
    assert "<" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("42", 42), ("#42", 42), (" 7 ", 7), ("2147483647", 2147483647), ("0001", 1)],
)
def test_parse_request_id(text: str, expected: int) -> None:
    assert parse_request_id(text) == expected


@pytest.mark.parametrize(
    "text", ["2147483648", "99999999999", "123456789012", "0", "#0", "00000000000000000001"]
)
def test_a_request_id_no_row_can_have_is_refused(text: str) -> None:
    """Ids are PostgreSQL ``integer`` columns: a number past their range would fail the query
    (not find nothing), so it is refused as input, whichever way it arrives."""
    with pytest.raises(UsageError, match=f"`{text}` is not a request id"):
        parse_request_id(text)
    with pytest.raises(UsageError, match="is not a request id"):
        parse_command(f"revoke {text}")
    with pytest.raises(UsageError, match="is not a request id"):
        parse_command(f"extend {text} 30m")


@pytest.mark.parametrize("text", ["²", "revoke ²", "revoke #³"])
def test_non_ascii_digit_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="is not a request id"):
        if text.startswith("revoke"):
            parse_command(text)
        else:
            parse_request_id(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "payments-db 30m INC-4211 checkout errors",
            RequestAccess("payments-db", "30m", "INC-4211 checkout errors"),
        ),
        ("payments-db 1h30m why", RequestAccess("payments-db", "1h30m", "why")),
        # no duration: the default applies later
        (
            "payments-db INC-4211 checkout errors",
            RequestAccess("payments-db", None, "INC-4211 checkout errors"),
        ),
        # whitespace is normalised between words
        ("  payments-db   2h   a   b  ", RequestAccess("payments-db", "2h", "a b")),
        # the resource keeps its case: validation decides, parsing does not guess
        ("Payments-DB 2h x", RequestAccess("Payments-DB", "2h", "x")),
        # a word that starts with a digit (or a sign or a dot) is always a duration
        ("payments-db 3x oops", RequestAccess("payments-db", "3x", "oops")),
        ("payments-db -5m oops", RequestAccess("payments-db", "-5m", "oops")),
        ("payments-db +5m oops", RequestAccess("payments-db", "+5m", "oops")),
        ("payments-db .5h oops", RequestAccess("payments-db", ".5h", "oops")),
        ("payments-db 4211 checkout", RequestAccess("payments-db", "4211", "checkout")),
        # ... even with nothing after it, so the reason is empty and validation says so
        ("payments-db 30m", RequestAccess("payments-db", "30m", "")),
        # a word that does not start like a number is part of the reason
        ("payments-db m30 checkout", RequestAccess("payments-db", None, "m30 checkout")),
        # subcommand look-alikes are not subcommands
        ("revok 42", RequestAccess("revok", "42", "")),
        ("helpme now", RequestAccess("helpme", None, "now")),
    ],
)
def test_request_access(text: str, expected: RequestAccess) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize("text", ["payments-db", "lst", "<!channel>", "x" * 200])
def test_one_word_is_a_missing_reason(text: str) -> None:
    with pytest.raises(UsageError, match="Missing reason") as info:
        parse_command(text)
    message = str(info.value)
    assert "<!channel>" not in message
    assert "x" * 65 not in message


def test_subcommands_are_the_reserved_words() -> None:
    assert frozenset({"help", "list", "revoke", "extend", "lock", "unlock"}) == SUBCOMMANDS


# Grammar and validation together: what a user sees for each kind of bad input.
@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("payments-db 30 INC-1 x", DurationError, "is not a duration"),
        ("payments-db 1.5h INC-1 x", DurationError, "is not a duration"),
        ("payments-db -5m INC-1 x", DurationError, "is not a duration"),
        ("payments-db 3x INC-1 x", DurationError, "is not a duration"),
        ("payments-db 0m INC-1 x", DurationError, "too short"),
        ("payments-db 5h INC-1 x", DurationError, "at most 4h"),
        ("payments-db 999d INC-1 x", DurationError, "at most 4h"),
        ("payments-db 30m", ReasonError, "Please give a reason"),
        ("orders-logs INC-1 x", DurationError, "Say how long"),  # no default_duration
        ("revok 42", UnknownResource, "Unknown resource"),
        ("frobnicate 1h why not", UnknownResource, "Unknown resource"),
    ],
)
def test_bad_input_end_to_end(text: str, error: type[UserError], fragment: str) -> None:
    intent = parse_command(text)
    assert isinstance(intent, RequestAccess)
    with pytest.raises(error, match=fragment):
        validate_request(RESOURCES, intent.resource, intent.duration_text, intent.reason)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("payments-db INC-4211 checkout errors", 60),  # default_duration: 1h
        ("payments-db 15m INC-4211 checkout errors", 15),
        ("payments-db 4h INC-4211 checkout errors", 240),
    ],
)
def test_default_and_explicit_duration(text: str, minutes: int) -> None:
    intent = parse_command(text)
    assert isinstance(intent, RequestAccess)
    valid = validate_request(RESOURCES, intent.resource, intent.duration_text, intent.reason)
    assert valid.duration.total_seconds() == minutes * 60
    assert valid.reason == "INC-4211 checkout errors"


@pytest.mark.parametrize(
    ("text", "user", "reason"),
    [
        ("lock <@U0MALLORY|mallory> phished at 09:12", "U0MALLORY", "phished at 09:12"),
        ("LOCK <@W0ABC> token in a pastebin", "W0ABC", "token in a pastebin"),
        ("lock U0MALLORY see <#C0SEC|security>", "U0MALLORY", "see #security"),
    ],
)
def test_lock_names_a_user_and_a_reason(text: str, user: str, reason: str) -> None:
    assert parse_command(text) == LockUser(user, reason)


def test_unlock_names_one_user() -> None:
    assert parse_command("unlock <@U0MALLORY|mallory>") == UnlockUser("U0MALLORY")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("lock", "Usage: `/debug-access lock @user <reason>`"),
        ("lock <@U0MALLORY>", "Usage: `/debug-access lock @user <reason>`"),
        ("lock @mallory phished", "`@mallory` is not a user: mention them"),
        ("lock <!channel> everyone", "is not a user"),
        ("unlock", "Usage: `/debug-access unlock @user`"),
        ("unlock <@U0A|a> <@U0B|b>", "Usage: `/debug-access unlock @user`"),
    ],
)
def test_lock_and_unlock_refuse_what_is_not_one_user(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_command(text)
    assert fragment in str(caught.value)


def test_a_reason_keeps_mentions_and_links_readable() -> None:
    intent = parse_command(
        "payments-db 30m ask <@U0BOB|bob> in <#C0OPS|ops> see <https://x.io/1|x>"
    )
    assert isinstance(intent, RequestAccess)
    assert intent.reason == "ask @bob in #ops see https://x.io/1"


def test_what_slack_escaped_as_text_comes_back_as_typed() -> None:
    """Slack sends a typed `<`, `>` and `&` as entities; the reason keeps what was typed (and is
    escaped again wherever it is shown), and a typed `<@U1>` stays text."""
    intent = parse_command("payments-db 30m a &lt;b&gt; &amp;&amp; &lt;@U0CEO&gt; c")
    assert isinstance(intent, RequestAccess)
    assert intent.reason == "a <b> && <@U0CEO> c"
