"""What the notice outbox holds, by kind: the payload of each kind as text, and back.

A notice is a row written now and sent to Slack when Slack takes it (``bot.lifecycle.notices``).
The command line acts while Slack may be down, and every Slack step of what it did becomes a
notice Slack refused: a DM, a post to the audit channel, or the request's messages re-rendered.
Kinds this release does not know are left for a release that does (a rolling deploy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


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
