"""What the notice outbox holds, by kind: the payload of each kind as text, and back.

A notice is a row written now and sent to Slack when Slack takes it (``bot.lifecycle.notices``).
The command line acts while Slack may be down, and every Slack step of what it did becomes a
notice Slack refused: a DM, a post to the audit channel, or the request's messages re-rendered.
Kinds this release does not know are left for a release that does (a rolling deploy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta


class NoticeKind:
    """``Notice.kind``: what sending the notice means."""

    #: DM ``text`` to ``user`` (the requester told; the only kind before the command line).
    DM = "dm"
    #: Post to the audit channel, in the request's thread: ``text`` is an ``AuditPost``.
    AUDIT = "audit"
    #: Re-render the request's Slack messages from the database (buttons gone after a decision,
    #: the credentials DM closed after a revocation). ``text`` is unused.
    REFRESH = "refresh"

    ALL = (DM, AUDIT, REFRESH)


@dataclass(frozen=True)
class AuditPost:
    """One line for the audit channel, kept until Slack takes it."""

    action: str
    text: str
    alert: bool = False

    def dumps(self) -> str:
        return json.dumps({"action": self.action, "text": self.text, "alert": self.alert})

    @classmethod
    def loads(cls, payload: str) -> AuditPost:
        """Read a stored post; a row that is not one (hand-edited, a newer release's) is a
        ValueError, so the sender can set it aside instead of failing the whole outbox."""
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not an audit post: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("not an audit post: not an object")
        action, text, alert = data.get("action"), data.get("text"), data.get("alert", False)
        if not isinstance(action, str) or not isinstance(text, str) or not isinstance(alert, bool):
            raise ValueError("not an audit post: action and text must be strings")
        return cls(action=action, text=text, alert=alert)


#: A notice Slack has refused for this long since it was written is given up: whatever it reports
#: is a week old, and the audit trail (with the digest) is where someone still learns of it.
GIVE_UP_AFTER = timedelta(days=7)

#: Slack's answers that retrying cannot change, by kind: the recipient is gone (deactivated,
#: unknown, a bot) or the channel is (deleted, archived, the bot removed from it). Never a code
#: about the bot's own token (``account_inactive``, ``invalid_auth``): those stop every notice,
#: and an admin fixing the token should find them all still queued.
PERMANENT_REFUSALS: dict[str, frozenset[str]] = {
    NoticeKind.DM: frozenset(
        {
            "user_not_found",
            "user_disabled",
            "user_not_visible",
            "cannot_dm_bot",
            "channel_not_found",
            "is_archived",
        }
    ),
    NoticeKind.AUDIT: frozenset({"channel_not_found", "not_in_channel", "is_archived"}),
    NoticeKind.REFRESH: frozenset({"channel_not_found", "message_not_found", "is_archived"}),
}

#: ``give_up_reason``'s answer when the notice is too old rather than refused for good.
TOO_OLD = "too_old"


def give_up_reason(kind: str, code: str | None, created_at: datetime, now: datetime) -> str | None:
    """Why a notice Slack just refused must not be tried again (Slack's code, or ``TOO_OLD``),
    or None to retry it: a refusal for good would otherwise be retried forever, and hold back
    every notice queued after it."""
    if code is not None and code in PERMANENT_REFUSALS.get(kind, frozenset()):
        return code
    if now - created_at >= GIVE_UP_AFTER:
        return TOO_OLD
    return None
