"""The daily digest as Slack messages: a short main message for a phone, the rest in its thread.

The main message is a headline, one line of counts, then sections in the order a reader acts on
them: Needs attention, Grants, Active now, Audit chain. Each section shows its first few items
and says how many more are in the thread; the thread replies hold the rest, split so that no
reply exceeds Slack's 50 blocks or 3,000 characters per section. On a busy day the grants also
come as a CSV file for the poster to upload. A day with nothing in it is one line.

Pure: a ``Digest`` in, message dicts out. All user text (the reason, the chain's problem) passes
through ``escape``; ids and resource names were validated by the policy.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.domain.digest import Attention, AttentionKind, Digest, GrantLine, RequestRecord
from bot.domain.durations import format_duration
from bot.domain.notices import TOO_OLD
from bot.mrkdwn import escape, when
from bot.slack.blocks import SECTION_TEXT_LIMIT, Block, context, section

HEADER_TEXT_LIMIT = 150
MESSAGE_BLOCK_LIMIT = 50
# Items per section in the main message: enough to act on, short enough for a phone screen.
MAIN_ITEMS = 5
# Characters of section text per thread reply: Slack accepts more, but a reply this size still
# reads on a phone and stays far from any limit on the message as a whole.
THREAD_MESSAGE_CHARS = 12_000
# Reasons are shortened in the digest (the request's own message and the audit trail keep them
# whole); cut before escaping so that an entity such as ``&amp;`` is never split.
REASON_CHARS = 200
# From this many grants on, the digest also comes with a CSV of all of them.
CSV_THRESHOLD = 50
_MENTIONED_IDS = 10


@dataclass(frozen=True)
class SlackMessage:
    """One ``chat.postMessage``: fallback ``text`` for notifications, and the blocks."""

    text: str
    blocks: list[Block]


@dataclass(frozen=True)
class CsvAttachment:
    """A file for ``files_upload_v2(filename=..., content=..., title=...)`` in the thread."""

    filename: str
    title: str
    content: str


@dataclass(frozen=True)
class DigestMessages:
    """Post ``main`` to the audit channel, then each of ``thread`` as a reply to it (in order),
    then upload ``csv_attachment`` (if any) to the same thread."""

    main: SlackMessage
    thread: tuple[SlackMessage, ...] = ()
    csv_attachment: CsvAttachment | None = None


@dataclass(frozen=True)
class _List:
    """One section of the digest: its title and its lines, before they are split up."""

    title: str
    lines: list[str]
    in_csv: bool = False


def render_digest(digest: Digest) -> DigestMessages:
    """The digest as a main message, its thread replies, and on busy days a CSV of the grants."""
    if digest.is_empty:

        def line(until: str) -> str:
            return f"No access requests in the {_span(digest)} to {until}. Audit chain intact."

        return DigestMessages(
            main=SlackMessage(
                text=line(_plain_time(digest, digest.window_end)),
                blocks=[section(line(when(digest.window_end)))],
            )
        )
    attachment = _csv_attachment(digest) if len(digest.grants) >= CSV_THRESHOLD else None
    lists = [
        _List(
            f":rotating_light: *Needs attention ({len(digest.attention)})*",
            [attention_line(item, digest) for item in digest.attention],
        ),
        _List(
            f":key: *Grants ({len(digest.grants)})*",
            [grant_line(grant) for grant in digest.grants],
            in_csv=attachment is not None,
        ),
        _List(
            f":large_green_circle: *Active now ({len(digest.active)})*",
            [active_line(record) for record in digest.active],
        ),
    ]
    blocks: list[Block] = [_header(digest), context(_summary(digest))]
    overflow: list[_List] = []
    for part in lists:
        if not part.lines:
            continue
        more = _more_line(part)
        text, shown = _fit(part.title, part.lines, MAIN_ITEMS, more)
        blocks.append(section(text))
        if shown < len(part.lines):
            overflow.append(_List(part.title.replace("*", "").strip(), part.lines[shown:]))
    blocks.append(section(_chain_line(digest)))
    thread = _thread(digest, overflow)
    main = SlackMessage(text=_fallback(digest, bool(thread)), blocks=blocks)
    return DigestMessages(main=main, thread=thread, csv_attachment=attachment)


# -- lines ----------------------------------------------------------------------------------------


def grant_line(grant: GrantLine) -> str:
    """``#42 `payments-db` · @carol · approved by @alice · asked 1h, held 45m (expired) — why``"""
    record = grant.record
    if record.break_glass:
        approved = "break-glass, " + (
            "reviewed by " + _user(record.reviewed_by) if record.reviewed_by else "not reviewed"
        )
    elif record.approvers:
        approved = "approved by " + ", ".join(_user(u) for u in record.approvers)
    else:
        approved = "no approvals recorded"
    held = format_duration(grant.held)
    if grant.ended:
        held += f" ({escape(record.end_reason)})" if record.end_reason else ""
    else:
        held += " so far"
    return (
        f"• #{record.request_id} `{record.resource}` · {_user(record.requester)} · "
        f"{approved} · asked {format_duration(record.duration_asked)}, held {held} — "
        f"{_reason(record.reason)}"
    )


def active_line(record: RequestRecord) -> str:
    """``#42 `payments-db` · @carol · until 14:30``"""
    until = f"until {when(record.expires_at)}" if record.expires_at else "no expiry recorded"
    failing = ", revocation failing" if record.revoke_failed else ""
    return (
        f"• #{record.request_id} `{record.resource}` · {_user(record.requester)} · {until}{failing}"
    )


def attention_line(item: Attention, digest: Digest) -> str:
    """One finding in words, with the request it concerns."""
    ref = f"#{item.request_ids[0]} `{item.resource}`" if item.request_ids else ""
    who = _user(item.people[0]) if item.people else "someone"
    if item.kind is AttentionKind.USER_LOCKED:
        by = _user(item.people[1]) if len(item.people) > 1 else "an admin"
        at = f" {when(item.at)}" if item.at else ""
        return f"• :lock: {who} locked by {by}{at}, until an admin unlocks — {_reason(item.note)}"
    if item.kind is AttentionKind.REVOCATION_FAILED:
        tries = f"{item.attempts} attempt{'' if item.attempts == 1 else 's'}"
        return f"• :x: {ref} for {who}: revocation failing after {tries}; still live in Vault"
    if item.kind is AttentionKind.LATE_REVOCATION:
        late = format_duration(item.late_by or timedelta(0))
        due = when(item.at) if item.at else "its expiry"
        if item.still_live:
            return f"• :hourglass: {ref} for {who}: due to end {due}, not revoked yet ({late} over)"
        return f"• :hourglass: {ref} for {who}: revoked {late} after it was due ({due})"
    if item.kind is AttentionKind.UNREVIEWED_BREAK_GLASS:
        at = f" at {when(item.at)}" if item.at else ""
        return f"• :fire: {ref}: break-glass access by {who}{at}, not reviewed yet"
    if item.kind is AttentionKind.NOTICE_GIVEN_UP:
        about = f" about {ref}" if ref else ""
        why = (
            "Slack refused it for a week"
            if item.note == TOO_OLD
            else f"Slack answered `{_reason(item.note)}`"
        )
        return f"• :mailbox_with_no_mail: {who} was never sent a message{about}: {why}"
    if item.kind is AttentionKind.MUTUAL_APPROVALS:
        first, second = (_user(u) for u in item.people[:2])
        there, back = item.times
        ids = ", ".join(f"#{i}" for i in item.request_ids[:_MENTIONED_IDS])
        if len(item.request_ids) > _MENTIONED_IDS:
            ids += ", …"
        return (
            f"• :left_right_arrow: {first} and {second} approved each other's requests "
            f"({there} and {back} times): {ids}"
        )
    # Outside working hours: the policy's wall clock is what the rule is about, so show it.
    local = item.at.astimezone(digest.tz) if item.at else None
    at = f" at {local:%a %H:%M} {digest.tz.key}" if local else ""
    requester = _user(item.people[1]) if len(item.people) > 1 else "someone"
    return f"• :crescent_moon: {ref} for {requester}: approved by {who}{at}"


# -- message parts --------------------------------------------------------------------------------


def _header(digest: Digest) -> Block:
    day = digest.window_end.astimezone(digest.tz)
    text = f"Access digest · {day:%a} {day.day} {day:%b %Y}"
    if digest.needs_attention:
        text += (
            f" · {digest.needs_attention} need{'s' if digest.needs_attention == 1 else ''} "
            "attention"
        )
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": text[:HEADER_TEXT_LIMIT], "emoji": True},
    }


def _summary(digest: Digest) -> str:
    c = digest.counts
    span = f"In the {_span(digest)} to {when(digest.window_end)}"
    if c.total == 0:
        return f"{span}: no new requests."
    return (
        f"{span}: *{c.requested}* requested · *{c.approved}* approved · *{c.denied}* denied · "
        f"*{c.expired_unanswered}* expired unanswered · *{c.break_glass}* break-glass · "
        f"*{c.failed}* failed"
    )


def _chain_line(digest: Digest) -> str:
    if digest.chain_ok:
        return ":white_check_mark: Audit chain intact."
    problem = escape(digest.chain_problem or "the audit chain did not verify")
    return f":rotating_light: *{problem[:1].upper()}{problem[1:]}*"


def _fallback(digest: Digest, threaded: bool) -> str:
    c = digest.counts
    text = (
        f"Access digest for the {_span(digest)} to {_plain_time(digest, digest.window_end)}: "
        f"{c.requested} requested, {c.approved} approved, {c.denied} denied, "
        f"{c.expired_unanswered} expired unanswered, {c.break_glass} break-glass, "
        f"{c.failed} failed; {len(digest.active)} active now"
    )
    if digest.needs_attention:
        text += (
            f"; {digest.needs_attention} need{'s' if digest.needs_attention == 1 else ''} attention"
        )
    if not digest.chain_ok:
        text += "; AUDIT CHAIN BROKEN"
    return text + (" (more in the thread)." if threaded else ".")


def _more_line(part: _List) -> Callable[[int], str]:
    def more(hidden: int) -> str:
        also = f" (all {len(part.lines):,} also in the attached CSV)" if part.in_csv else ""
        return f"_… and {hidden:,} more in the thread{also}_"

    return more


def _fit(
    title: str, lines: Sequence[str], limit: int, more: Callable[[int], str]
) -> tuple[str, int]:
    """The title and as many of the first ``limit`` lines as fit one section, plus the line
    saying how many more there are; returns the text and how many lines it shows."""
    for shown in range(min(limit, len(lines)), -1, -1):
        parts = [title, *lines[:shown]]
        if shown < len(lines):
            parts.append(more(len(lines) - shown))
        text = "\n".join(parts)
        if len(text) <= SECTION_TEXT_LIMIT:
            return text, shown
    return title, 0


def _thread(digest: Digest, overflow: Sequence[_List]) -> tuple[SlackMessage, ...]:
    """Everything the main message left out, as sections packed into replies."""
    sections: list[str] = []
    for part in overflow:
        sections.extend(_pack(f"*{part.title}, continued*", part.lines))
    messages: list[list[Block]] = []
    size = 0
    for text in sections:
        if (
            not messages
            or len(messages[-1]) >= MESSAGE_BLOCK_LIMIT
            or size + len(text) > THREAD_MESSAGE_CHARS
        ):
            messages.append([])
            size = 0
        messages[-1].append(section(text))
        size += len(text)
    day = _plain_time(digest, digest.window_end)
    return tuple(
        SlackMessage(
            text=f"Access digest for the {_span(digest)} to {day}, continued ({n}/{len(messages)})",
            blocks=blocks,
        )
        for n, blocks in enumerate(messages, start=1)
    )


def _pack(title: str, lines: Sequence[str]) -> list[str]:
    """Lines joined into section texts of at most 3,000 characters, the title on the first."""
    texts: list[str] = []
    current = title
    for line in lines:
        if len(current) + 1 + len(line) > SECTION_TEXT_LIMIT and current:
            texts.append(current)
            current = ""
        current = f"{current}\n{line}" if current else line
    if current:
        texts.append(current)
    return texts


def _csv_attachment(digest: Digest) -> CsvAttachment:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "request_id",
            "requester",
            "resource",
            "approvers",
            "break_glass",
            "reviewed_by",
            "asked",
            "held",
            "issued_at",
            "expires_at",
            "ended_at",
            "end_reason",
            "reason",
        ]
    )
    for grant in digest.grants:
        r = grant.record
        writer.writerow(
            [
                r.request_id,
                r.requester,
                r.resource,
                " ".join(r.approvers),
                "yes" if r.break_glass else "no",
                r.reviewed_by or "",
                format_duration(r.duration_asked),
                format_duration(grant.held),
                _iso(r.issued_at),
                _iso(r.expires_at),
                _iso(r.ended_at),
                r.end_reason or "",
                _cell(r.reason),
            ]
        )
    day = digest.window_end.astimezone(digest.tz)
    return CsvAttachment(
        filename=f"access-digest-{day:%Y-%m-%d}.csv",
        title=f"All {len(digest.grants)} grants, {day:%Y-%m-%d}",
        content=buffer.getvalue(),
    )


# -- small helpers --------------------------------------------------------------------------------


def _user(user_id: str | None) -> str:
    return f"<@{user_id}>" if user_id else "someone"


def _reason(reason: str) -> str:
    cleaned = " ".join(reason.split())
    if len(cleaned) > REASON_CHARS:
        cleaned = cleaned[: REASON_CHARS - 1] + "…"
    return escape(cleaned)


def _span(digest: Digest) -> str:
    length = digest.window_end - digest.window_start
    return "24 h" if length == timedelta(hours=24) else format_duration(length)


def _plain_time(digest: Digest, moment: datetime) -> str:
    """A time for fallback text, which Slack shows unformatted: the policy's wall clock."""
    local = moment.astimezone(digest.tz)
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat() if moment else ""


def _cell(text: str) -> str:
    """Neutralise spreadsheet formulas: a cell starting with = + - @ would be evaluated."""
    return "'" + text if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text
