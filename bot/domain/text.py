"""Showing a user's own words back to them safely, without knowing anything about Slack.

Error messages quote what was typed (a resource name, a duration). ``quote`` drops characters
that carry markup in chat formats, so the message can be shown as-is and still neither ping
(``<!channel>``), link nor break formatting. Free text that is stored (the reason) is kept
verbatim and escaped by the renderer instead.
"""

from __future__ import annotations

import unicodedata

_MARKUP = set("<>&`*_~|")


def quote(text: str, limit: int = 64) -> str:
    """A short, markup-free rendering of user input for use inside a message."""
    kept = "".join(
        ch for ch in text if ch not in _MARKUP and unicodedata.category(ch)[0] != "C"
    ).strip()
    if len(kept) > limit:
        kept = kept[:limit] + "…"
    return kept or "(empty)"


def one_line(text: str) -> str:
    """``text`` on one line for a terminal or a log: every control character (line breaks,
    escape sequences, tabs, Unicode line separators) written as its escape (``\\n``,
    ``\\x1b``), the backslash doubled, so what a user typed can neither add a line nor move
    the cursor."""
    out: list[str] = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in {"Zl", "Zp"}:
            escaped = repr(ch)[1:-1]
            out.append(escaped if escaped != ch else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)
