"""What Slack ids, policy names and our own row ids look like; one definition for the policy,
the rotations, and everything a Slack request carries back to us."""

import re
from typing import TypeGuard

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
SLACK_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")
SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
# Resource and rotation names: lowercase, digits, - and _, as they appear in commands.
POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

#: Request ids are PostgreSQL ``integer`` columns (SQLite's are wider; the narrower one rules).
#: A number outside this range names no row, and a query with it fails instead of finding
#: nothing, so it is refused as input before it reaches one.
MAX_ROW_ID = 2**31 - 1


def is_row_id(value: object) -> TypeGuard[int]:
    """Whether ``value`` can be the id of a stored row: an ``int`` (not a bool or a float) in
    ``1..MAX_ROW_ID``."""
    return type(value) is int and 1 <= value <= MAX_ROW_ID


def is_channel_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is shaped like a Slack conversation id (``C…``, ``G…``, ``D…``)."""
    return isinstance(value, str) and SLACK_CHANNEL_ID.fullmatch(value) is not None
