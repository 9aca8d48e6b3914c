"""Slack's text primitives: escaping user text, and times each reader sees in their own zone.

Kept apart from the Block Kit builders because the lifecycle's own audit lines and DMs are
mrkdwn too, and must format times exactly as the messages do.
"""

from __future__ import annotations

from datetime import datetime


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: ``&``, ``<`` and ``>`` so user text can neither ping nor link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def when(moment: datetime, style: str = "{date_short_pretty} {time}") -> str:
    """A time that each reader sees in their own time zone, with a UTC fallback."""
    return f"<!date^{int(moment.timestamp())}^{style}|{moment:%Y-%m-%d %H:%M} UTC>"
