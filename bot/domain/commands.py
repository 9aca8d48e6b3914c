"""The grammar of ``/debug-access``: turn the text after the command into one intent.

Parsing knows nothing about the policy; validating the resource and the duration against it is
``bot.domain.requests``. Keeping the two apart lets the modal reuse the validation unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.domain.errors import UserError
from bot.domain.identifiers import MAX_ROW_ID, SLACK_USER_ID, is_row_id
from bot.domain.text import quote, slack_plain

SUBCOMMANDS = frozenset({"help", "list", "revoke", "extend", "lock", "unlock"})
#: A user as Slack escapes a mention in a slash command (``<@U0123|alice>``), or a bare id.
_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$")
BREAK_GLASS_FLAG = "--break-glass"


@dataclass(frozen=True)
class OpenRequestForm:
    """``/debug-access`` with no text: open the request modal."""


@dataclass(frozen=True)
class ShowHelp:
    """``/debug-access help``."""


@dataclass(frozen=True)
class ListMine:
    """``/debug-access list``: the caller's pending requests and active grants."""


@dataclass(frozen=True)
class RevokeGrant:
    """``/debug-access revoke <id>``: end a grant (or withdraw a pending request) early."""

    request_id: int


@dataclass(frozen=True)
class ExtendGrant:
    """``/debug-access extend <id> <duration>``: ask the approvers for more time."""

    request_id: int
    duration_text: str


@dataclass(frozen=True)
class RequestAccess:
    """``/debug-access <resource> [<duration>] <reason…>``.

    ``duration_text`` is None when the second word does not look like a duration at all, in which
    case the resource's default duration applies. A word that starts like a number (``3x``,
    ``-5m``) is always taken as a duration and must parse, so a typo is never silently ignored.
    """

    resource: str
    duration_text: str | None
    reason: str
    break_glass: bool = False


@dataclass(frozen=True)
class LockUser:
    """``/debug-access lock @user <reason>``: an admin's kill switch on a (compromised) account."""

    user: str
    reason: str


@dataclass(frozen=True)
class UnlockUser:
    """``/debug-access unlock @user``: lift the lock."""

    user: str


Command = (
    OpenRequestForm
    | ShowHelp
    | ListMine
    | RevokeGrant
    | ExtendGrant
    | RequestAccess
    | LockUser
    | UnlockUser
)


class UsageError(UserError):
    """The command text does not fit the grammar."""


def parse_request_id(text: str) -> int:
    """Accept ``42`` or ``#42``: digits naming a row that can exist (``is_row_id``), so a
    number past the column's range is refused here rather than failing a query."""
    cleaned = text.strip().removeprefix("#")
    digits = cleaned.isascii() and cleaned.isdigit() and len(cleaned) <= len(str(MAX_ROW_ID))
    if not (digits and is_row_id(int(cleaned))):
        raise UsageError(f"`{quote(text)}` is not a request id (it looks like `42`).")
    return int(cleaned)


def parse_user(text: str) -> str:
    """Accept a Slack mention (``<@U0123|alice>``, as Slack escapes it) or a bare user id."""
    word = text.strip()
    match = _MENTION.fullmatch(word)
    if match:
        return match.group(1)
    if SLACK_USER_ID.fullmatch(word):
        return word
    raise UsageError(f"`{quote(text)}` is not a user: mention them, like `@alice`.")


def _looks_like_duration(word: str) -> bool:
    return bool(word) and (word[0].isdigit() or word[0] in "-+.")


def parse_command(text: str) -> Command:
    """Parse the slash command text. Raises UsageError with a hint on anything unexpected."""
    words = text.split()
    if not words:
        return OpenRequestForm()
    head = words[0].lower()
    if head == "help":
        return ShowHelp()
    if head == "list":
        if len(words) > 1:
            raise UsageError("`list` takes no arguments.")
        return ListMine()
    if head == "revoke":
        if len(words) != 2:
            raise UsageError("Usage: `/debug-access revoke <id>`.")
        return RevokeGrant(parse_request_id(words[1]))
    if head == "extend":
        if len(words) != 3:
            raise UsageError(
                "Usage: `/debug-access extend <id> <duration>`, for example "
                "`/debug-access extend 42 30m`."
            )
        return ExtendGrant(parse_request_id(words[1]), words[2])
    if head == "lock":
        if len(words) < 3:
            raise UsageError("Usage: `/debug-access lock @user <reason>`.")
        return LockUser(parse_user(words[1]), slack_plain(" ".join(words[2:])))
    if head == "unlock":
        if len(words) != 2:
            raise UsageError("Usage: `/debug-access unlock @user`.")
        return UnlockUser(parse_user(words[1]))
    break_glass = BREAK_GLASS_FLAG in (word.lower() for word in words)
    words = [word for word in words if word.lower() != BREAK_GLASS_FLAG]
    if not words:
        raise UsageError(
            f"Usage: `/debug-access <resource> <duration> {BREAK_GLASS_FLAG} <reason>`."
        )
    if len(words) == 1:
        raise UsageError(
            f"Missing reason. Usage: `/debug-access {quote(words[0])} <duration> <reason>`, "
            "for example `/debug-access payments-db 30m INC-4211 checkout errors`."
        )
    resource = words[0]
    if _looks_like_duration(words[1]):
        duration_text: str | None = words[1]
        reason_words = words[2:]
    else:
        duration_text = None
        reason_words = words[1:]
    return RequestAccess(
        resource=resource,
        duration_text=duration_text,
        reason=slack_plain(" ".join(reason_words)),
        break_glass=break_glass,
    )
