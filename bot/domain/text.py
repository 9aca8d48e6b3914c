"""A user's own words: read back as they were typed, and shown back to them safely.

Error messages quote what was typed (a resource name, a duration). ``quote`` drops characters
that carry markup in chat formats, so the message can be shown as-is and still neither ping
(``<!channel>``), link nor break formatting. Free text that is stored (the reason) is kept
verbatim and escaped by the renderer instead. ``slack_plain`` is the one piece that knows how
Slack escapes a slash command's text: it turns that back into what the person typed.
"""

from __future__ import annotations

import re
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


_SLACK_ENTITY = re.compile(r"<([@#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def slack_plain(text: str) -> str:
    """Slack's escaped mentions, channels and links as the person typed them: ``<@U1|alice>``
    becomes ``@alice``, ``<#C1|ops>`` ``#ops``, ``<https://x|x>`` ``https://x``, ``&lt;``
    ``<``. The slash
    command arrives escaped so that a mention names a user id; a reason is kept as readable
    text (and escaped again whenever it is shown)."""

    def plain(match: re.Match[str]) -> str:
        sigil, target, label = match.groups()
        if sigil in {"@", "#"}:
            return f"{sigil}{label or target}"
        if sigil == "!":
            return f"@{(label or target).split('^')[0]}"
        return target

    # Slack sends &, < and > typed as text escaped (&amp; &lt; &gt;): back to what was typed,
    # after the entities above (so a typed "<@U1>" stays text, never becomes a mention).
    readable = _SLACK_ENTITY.sub(plain, text)
    return readable.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


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
