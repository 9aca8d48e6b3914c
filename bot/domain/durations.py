"""Durations as people type them: ``15m``, ``2h``, ``1h30m``, ``90m``, ``1d``.

A strict grammar on purpose: a typo must not silently become a different length of production
access, so ``30`` (no unit), ``1.5h``, ``-5m`` and ``1h1h`` are all rejected.
"""

from __future__ import annotations

import re
from datetime import timedelta

from bot.domain.errors import UserError
from bot.domain.text import quote

_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(
    r"^(?:(?P<d>\d{1,3})d)?(?:(?P<h>\d{1,4})h)?(?:(?P<m>\d{1,5})m)?(?:(?P<s>\d{1,6})s)?$",
    re.ASCII,
)

MINIMUM_GRANT = timedelta(minutes=1)
# The grant token role's explicit max TTL: Vault would silently cap anything longer.
MAXIMUM_GRANT = timedelta(hours=24)


class DurationError(UserError):
    """The text is not a duration we accept."""


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text into a timedelta; raise DurationError with a helpful message."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _DURATION.fullmatch(cleaned) if cleaned else None
    if match is None or not any(match.groupdict().values()):
        raise DurationError(
            f"`{quote(text)}` is not a duration. Use minutes and hours like `15m`, `2h` or `1h30m`."
        )
    seconds = sum(int(v) * _UNIT_SECONDS[k] for k, v in match.groupdict().items() if v)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way people type it: ``1h30m``, ``45m``, ``2d``; ``0m`` for zero."""
    total = int(value.total_seconds())
    if total <= 0:
        return "0m"
    parts = []
    for unit, size in _UNIT_SECONDS.items():
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def check_grant_duration(requested: timedelta, maximum: timedelta) -> timedelta:
    """Accept a grant length from one minute up to the resource's maximum, inclusive."""
    if requested < MINIMUM_GRANT:
        raise DurationError(
            f"{format_duration(requested)} is too short: the minimum is "
            f"{format_duration(MINIMUM_GRANT)}."
        )
    if requested > maximum:
        raise DurationError(
            f"{format_duration(requested)} is longer than this resource allows "
            f"(at most {format_duration(maximum)})."
        )
    return requested
