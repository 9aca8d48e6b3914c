"""Errors that carry a message meant for the person who caused them.

Slack handlers turn a ``UserError`` into an ephemeral reply; anything else is a bug or an outage
and is logged (never shown verbatim, since third-party exception text may hold internals).
"""


class UserError(Exception):
    """Bad input or a refused action. ``str(err)`` is shown to the user as-is (mrkdwn-escaped)."""


class NotAllowed(UserError):
    """The actor may not do this (not an approver, the requester approving themselves, ...)."""


class NotFound(UserError):
    """No such request or grant, or not one this user may see."""


class Conflict(UserError):
    """The request is no longer in a state that allows the action (already decided, ended...)."""
