"""Durations as people type them, and the bounds a grant must stay within."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.domain.durations import (
    MINIMUM_GRANT,
    DurationError,
    check_grant_duration,
    format_duration,
    parse_duration,
)
from bot.domain.errors import UserError

M = timedelta(minutes=1)
H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", 15 * M),
        ("2h", 2 * H),
        ("1h30m", 90 * M),
        ("90m", 90 * M),
        ("1d", timedelta(days=1)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("45s", timedelta(seconds=45)),
        ("2H", 2 * H),
        ("1H30M", 90 * M),
        ("  30m  ", 30 * M),
        ("1h 30m", 90 * M),
        ("1 h 30 m", 90 * M),
        ("0h30m", 30 * M),
        ("007m", 7 * M),
        ("0m", timedelta(0)),  # syntactically fine; check_grant_duration refuses it
    ],
)
def test_parse_valid(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "30",  # no unit
        "1.5h",
        "-5m",
        "+5m",
        "1h1h",  # a unit twice
        "30m1h",  # units out of order
        "abc",
        "",
        "   ",
        "m",
        "h30",
        "30 minutes",
        "1w",
        "1y",
        "1h-30m",
        "0x1fm",
        "1e3m",
        "12345678h",  # more digits than any unit allows
        "9999d",
        "1_000m",
        "30\nm",  # a newline inside is not a space
        "½h",
    ],
)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    message = str(info.value)
    assert "is not a duration" in message
    assert "15m" in message  # the hint shows what works


def test_duration_error_is_a_user_error() -> None:
    assert issubclass(DurationError, UserError)


@pytest.mark.parametrize("hostile", ["<!channel>", "`rm` -rf", "<@U0ADMIN>", "*bold*_x_~y~|z"])
def test_parse_error_quotes_input_without_markup(hostile: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(hostile)
    message = str(info.value)
    for ch in "<>*_~|":
        assert ch not in message
    assert hostile not in message
    assert message.count("`") % 2 == 0  # every code span still closes


def test_parse_error_truncates_long_input() -> None:
    with pytest.raises(DurationError) as info:
        parse_duration("x" * 500)
    assert "x" * 65 not in str(info.value)
    assert "…" in str(info.value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0m"),
        (timedelta(seconds=-30), "0m"),
        (timedelta(seconds=45), "45s"),
        (15 * M, "15m"),
        (90 * M, "1h30m"),
        (2 * H, "2h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=2, minutes=5), "2d5m"),
        (timedelta(hours=1, seconds=1), "1h1s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "value",
    [
        timedelta(seconds=s)
        for s in (1, 59, 60, 61, 3599, 3600, 5400, 86_399, 86_400, 90_061, 7 * 86_400 + 1)
    ],
)
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["15m", "2h", "1h30m", "1d", "1d1h1m1s", "45s"])
def test_parse_then_format_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_minimum_grant_is_one_minute() -> None:
    assert timedelta(minutes=1) == MINIMUM_GRANT


@pytest.mark.parametrize(
    ("requested", "maximum"),
    [
        (M, 4 * H),  # the minimum, inclusive
        (4 * H, 4 * H),  # the maximum, inclusive
        (30 * M, 4 * H),
        (M, M),
    ],
)
def test_grant_duration_within_bounds(requested: timedelta, maximum: timedelta) -> None:
    assert check_grant_duration(requested, maximum) == requested


@pytest.mark.parametrize(
    ("requested", "maximum", "problem"),
    [
        (timedelta(0), 4 * H, "too short"),
        (timedelta(seconds=59), 4 * H, "too short"),
        (timedelta(seconds=-60), 4 * H, "too short"),
        (4 * H + timedelta(seconds=1), 4 * H, "at most 4h"),
        (timedelta(days=999), 4 * H, "at most 4h"),
        (2 * M, M, "at most 1m"),
    ],
)
def test_grant_duration_out_of_bounds(
    requested: timedelta, maximum: timedelta, problem: str
) -> None:
    with pytest.raises(DurationError, match=problem):
        check_grant_duration(requested, maximum)
