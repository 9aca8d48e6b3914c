"""Rendering the digest: the one-line empty day, the phone-sized main message, the thread that
takes the overflow within Slack's limits, escaping, and the CSV of a busy day."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk.models.blocks import Block as SdkBlock

from bot.domain.digest import (
    Approval,
    Digest,
    GivenUpNotice,
    LockRecord,
    RequestRecord,
    build_digest,
)
from bot.domain.notices import TOO_OLD
from bot.domain.requests import MAX_REASON_LENGTH
from bot.slack import digest_blocks
from bot.slack.digest_blocks import (
    CSV_THRESHOLD,
    HEADER_TEXT_LIMIT,
    MAIN_ITEMS,
    MESSAGE_BLOCK_LIMIT,
    DigestMessages,
    SlackMessage,
    render_digest,
)

BERLIN = ZoneInfo("Europe/Berlin")
END = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)  # Tue 09:00 CET
START = END - timedelta(hours=24)
MIDDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # Mon 11:00 CET
CAROL, ALICE, BOB = "U0CAROL", "U0ALICE", "U0BOB"
HOSTILE = "<!channel> <@U0ADMIN> <https://evil.example|click> & stuff"
RAW_MARKUP = ("<!channel>", "<@U0ADMIN>", "<https://evil", "& stuff")
SECTION_LIMIT = 3000


def grant(
    request_id: int,
    *,
    reason: str = "INC-4211 checkout errors",
    at: datetime = MIDDAY,
    **overrides: Any,
) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "requester": CAROL,
        "resource": "payments-db",
        "reason": reason,
        "duration_asked": timedelta(hours=1),
        "status": "ended",
        "created_at": at - timedelta(minutes=2),
        "approvals": (Approval(ALICE, at - timedelta(minutes=1)),),
        "decided_at": at - timedelta(minutes=1),
        "issued_at": at,
        "expires_at": at + timedelta(hours=1),
        "ended_at": at + timedelta(minutes=40),
        "end_reason": "revoked",
    }
    fields.update(overrides)
    return RequestRecord(**fields)


def digest(
    *records: RequestRecord,
    chain_ok: bool = True,
    chain_problem: str | None = None,
    now: datetime = END,
) -> Digest:
    return build_digest(
        records,
        window_start=START,
        window_end=END,
        now=now,
        chain_ok=chain_ok,
        chain_problem=chain_problem,
        tz=BERLIN,
    )


def messages(rendered: DigestMessages) -> list[SlackMessage]:
    return [rendered.main, *rendered.thread]


def texts(block: Any) -> Iterator[tuple[str, str]]:
    """Every (block type, text) pair in a block, nested fields and elements included."""
    if isinstance(block, dict):
        if isinstance(block.get("text"), dict):
            yield block.get("type", ""), block["text"]["text"]
        for value in block.values():
            if isinstance(value, list):
                for item in value:
                    yield from texts(item)
        if block.get("type") in {"mrkdwn", "plain_text"}:
            yield block["type"], block["text"]


def everything(rendered: DigestMessages) -> str:
    return json.dumps([[m.text, m.blocks] for m in messages(rendered)])


def assert_within_slack_limits(rendered: DigestMessages) -> None:
    for message in messages(rendered):
        assert message.text.strip(), "every message needs fallback text"
        assert 1 <= len(message.blocks) <= MESSAGE_BLOCK_LIMIT
        for block in message.blocks:
            # slack_sdk's models check Slack's documented lengths when serialising.
            assert SdkBlock.parse(block).to_dict() == block  # type: ignore[union-attr]
            for kind, text in texts(block):
                limit = HEADER_TEXT_LIMIT if block["type"] == "header" else SECTION_LIMIT
                assert len(text) <= limit, (kind, len(text))


# -- the empty day --------------------------------------------------------------------------------


def test_an_empty_day_is_one_line() -> None:
    rendered = render_digest(digest())
    assert rendered.thread == ()
    assert rendered.csv_attachment is None
    assert rendered.main.text == (
        "No access requests in the 24 h to 2026-11-03 09:00 CET. Audit chain intact."
    )
    (block,) = rendered.main.blocks
    line = block["text"]["text"]
    assert line.startswith("No access requests in the 24 h to <!date^1793692800^")
    assert line.endswith("|2026-11-03 08:00 UTC>. Audit chain intact.")
    assert "\n" not in line
    assert_within_slack_limits(rendered)


def test_a_quiet_day_with_a_broken_chain_is_not_rendered_as_intact() -> None:
    rendered = render_digest(
        digest(chain_ok=False, chain_problem="audit chain BROKEN at event 57: <changed>")
    )
    body = everything(rendered)
    assert "intact" not in body
    assert "Audit chain BROKEN at event 57: &lt;changed&gt;" in body
    assert "AUDIT CHAIN BROKEN" in rendered.main.text
    assert_within_slack_limits(rendered)


# -- an ordinary day ------------------------------------------------------------------------------


def test_an_ordinary_day_has_a_headline_counts_and_sections_in_order() -> None:
    night = datetime(2026, 11, 2, 22, 30, tzinfo=UTC)  # Mon 23:30 CET
    rendered = render_digest(
        digest(
            grant(1),
            grant(
                2,
                at=night,
                approvals=(Approval(BOB, night),),
                decided_at=night,
                ended_at=None,
                end_reason=None,
                expires_at=END + timedelta(hours=1),
                status="active",
            ),
            RequestRecord(
                request_id=3,
                requester=CAROL,
                resource="orders-logs",
                reason="x y z",
                duration_asked=timedelta(minutes=30),
                status="denied",
                created_at=MIDDAY,
                denied_by=ALICE,
                decided_at=MIDDAY,
            ),
        )
    )
    main = rendered.main
    assert rendered.thread == ()
    header, summary, *sections = main.blocks
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "Access digest · Tue 3 Nov 2026 · 1 needs attention",
            "emoji": True,
        },
    }
    counts = summary["elements"][0]["text"]
    assert (
        "*3* requested · *2* approved · *1* denied · *0* expired unanswered · "
        "*0* break-glass · *0* failed" in counts
    )
    titles = [s["text"]["text"].split("\n")[0] for s in sections]
    assert titles == [
        ":rotating_light: *Needs attention (1)*",
        ":key: *Grants (2)*",
        ":large_green_circle: *Active now (1)*",
        ":white_check_mark: Audit chain intact.",
    ]
    attention, grants, active, _chain = (s["text"]["text"] for s in sections)
    assert (
        "#2 `payments-db` for <@U0CAROL>: approved by <@U0BOB> at Mon 23:30 Europe/Berlin"
        in attention
    )
    assert (
        "• #1 `payments-db` · <@U0CAROL> · approved by <@U0ALICE> · asked 1h, "
        "held 40m (revoked) — INC-4211 checkout errors" in grants
    )
    assert "held 9h30m so far" in grants
    assert "#2 `payments-db` · <@U0CAROL> · until <!date^" in active
    assert main.text.startswith(
        "Access digest for the 24 h to 2026-11-03 09:00 CET: 3 requested, 2 approved, 1 denied"
    )
    assert "1 needs attention" in main.text
    assert "thread" not in everything(rendered)
    assert_within_slack_limits(rendered)


def test_each_kind_of_finding_reads_in_words() -> None:
    old = START - timedelta(days=3)
    rendered = render_digest(
        digest(
            grant(
                1,
                ended_at=None,
                end_reason=None,
                status="revoking",
                revoke_failed=True,
                revoke_attempts=4,
            ),
            grant(2, ended_at=MIDDAY + timedelta(hours=1, minutes=9)),
            grant(
                3,
                at=old,
                break_glass=True,
                approvals=(),
                decided_at=None,
                ended_at=old + timedelta(minutes=30),
            ),
            *[
                grant(10 + n, requester=a, approvals=(Approval(b, MIDDAY),))
                for n, (a, b) in enumerate([(CAROL, BOB), (CAROL, BOB), (BOB, CAROL), (BOB, CAROL)])
            ],
        )
    )
    attention = rendered.main.blocks[2]["text"]["text"]
    assert (
        "#1 `payments-db` for <@U0CAROL>: revocation failing after 4 attempts; still live "
        "in Vault" in attention
    )
    assert "#2 `payments-db` for <@U0CAROL>: revoked 9m after it was due (<!date^" in attention
    assert "#3 `payments-db`: break-glass access by <@U0CAROL> at <!date^" in attention
    assert "not reviewed yet" in attention
    assert (
        "<@U0BOB> and <@U0CAROL> approved each other's requests (2 and 2 times): #10, #11, "
        "#12, #13" in attention
    )


def test_a_live_grant_past_expiry_says_it_is_not_revoked_yet() -> None:
    overdue = grant(1, ended_at=None, end_reason=None, status="active")
    attention = render_digest(digest(overdue)).main.blocks[2]["text"]["text"]
    assert "not revoked yet (21h over)" in attention


def test_break_glass_grants_say_so_instead_of_an_approver() -> None:
    glass = grant(1, break_glass=True, approvals=(), decided_at=None, reviewed_by=BOB)
    body = everything(render_digest(digest(glass)))
    assert "break-glass, reviewed by <@U0BOB>" in body


def test_user_text_is_escaped_everywhere() -> None:
    rendered = render_digest(digest(grant(1, reason=HOSTILE)))
    body = everything(rendered)
    for raw in RAW_MARKUP:
        assert raw not in body
    assert (
        "&lt;!channel&gt; &lt;@U0ADMIN&gt; &lt;https://evil.example|click&gt; &amp; stuff" in body
    )


def test_long_reasons_are_shortened_without_splitting_an_entity() -> None:
    reason = "&" * MAX_REASON_LENGTH
    rendered = render_digest(digest(grant(1, reason=reason)))
    grants = rendered.main.blocks[2]["text"]["text"]
    shown = grants.split(" — ", 1)[1]
    assert shown.endswith("&amp;…")
    assert re.fullmatch(r"(&amp;)+…", shown)


# -- a busy day -----------------------------------------------------------------------------------


# Markup, then ampersands: each becomes five characters once escaped, the worst case for size.
LONGEST_HOSTILE = HOSTILE + " " + "&" * (MAX_REASON_LENGTH - len(HOSTILE) - 1)


def busy_day(count: int = 500) -> Digest:
    """``count`` grants with the longest hostile reasons, and 20 failing revocations."""
    records = [
        grant(
            n,
            reason=LONGEST_HOSTILE,
            at=MIDDAY + timedelta(seconds=n),
            approvals=(Approval(ALICE, MIDDAY), Approval(BOB, MIDDAY)),
        )
        for n in range(1, count + 1)
    ]
    records += [
        grant(
            1000 + n,
            reason=LONGEST_HOSTILE,
            ended_at=None,
            end_reason=None,
            status="revoking",
            revoke_failed=True,
            revoke_attempts=n,
        )
        for n in range(1, 21)
    ]
    return digest(*records)


def test_500_grants_fit_slack_limits_in_every_message() -> None:
    rendered = render_digest(busy_day())
    assert len(rendered.thread) >= 2
    assert_within_slack_limits(rendered)
    for raw in RAW_MARKUP:
        assert raw not in everything(rendered)


def test_500_grants_fit_even_if_slack_took_any_size_of_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the per-reply character budget, the 50-block limit alone must still hold.
    monkeypatch.setattr(digest_blocks, "THREAD_MESSAGE_CHARS", 10**9)
    rendered = render_digest(busy_day())
    assert max(len(m.blocks) for m in rendered.thread) == MESSAGE_BLOCK_LIMIT
    assert_within_slack_limits(rendered)


def test_the_main_message_stays_short_and_points_to_the_thread() -> None:
    rendered = render_digest(busy_day())
    main = rendered.main
    assert len(main.blocks) <= 8
    attention, grants = (b["text"]["text"] for b in main.blocks[2:4])
    assert attention.count("\n• ") == MAIN_ITEMS
    assert attention.endswith("_… and 15 more in the thread_")
    # Long reasons: fewer than five grants fit one section, and the pointer is never cut off.
    shown = grants.count("\n• ")
    assert 1 <= shown < MAIN_ITEMS
    assert grants.endswith(
        f"_… and {520 - shown} more in the thread (all 520 also in the attached CSV)_"
    )
    assert "(more in the thread)" in main.text
    assert len(main.text) < 400


def test_the_thread_holds_every_item_the_main_message_left_out_once() -> None:
    rendered = render_digest(busy_day())
    grant_ids: list[int] = []
    attention_ids: list[int] = []
    for message in messages(rendered):
        for block in message.blocks:
            if block["type"] != "section":
                continue
            for line in block["text"]["text"].split("\n"):
                found = re.match(r"• (?::\w+: )?#(\d+) ", line)
                if not found:
                    continue
                if "revocation failing after" in line:
                    attention_ids.append(int(found.group(1)))
                elif ", held " in line:
                    grant_ids.append(int(found.group(1)))
    assert sorted(grant_ids) == [*range(1, 501), *range(1001, 1021)]
    assert sorted(attention_ids) == list(range(1001, 1021))
    for n, message in enumerate(rendered.thread, start=1):
        assert message.text.endswith(f"continued ({n}/{len(rendered.thread)})")


def test_a_busy_day_comes_with_a_csv_of_every_grant() -> None:
    rendered = render_digest(busy_day())
    attachment = rendered.csv_attachment
    assert attachment is not None
    assert attachment.filename == "access-digest-2026-11-03.csv"
    rows = list(csv.DictReader(io.StringIO(attachment.content)))
    assert len(rows) == 520
    first = next(row for row in rows if row["request_id"] == "1")
    assert first["approvers"] == "U0ALICE U0BOB"
    assert first["reason"].startswith("<!channel>")  # raw in a file: nothing renders it
    assert len(first["reason"]) == MAX_REASON_LENGTH  # whole, not shortened
    assert first["held"] == "40m"
    assert first["issued_at"] == (MIDDAY + timedelta(seconds=1)).isoformat()


def test_a_csv_cell_cannot_become_a_spreadsheet_formula() -> None:
    records = [
        grant(n, reason='=HYPERLINK("http://evil.example","x")')
        for n in range(1, CSV_THRESHOLD + 1)
    ]
    attachment = render_digest(digest(*records)).csv_attachment
    assert attachment is not None
    rows = list(csv.DictReader(io.StringIO(attachment.content)))
    assert rows[0]["reason"].startswith("'=HYPERLINK")


def test_a_few_grants_come_without_a_csv() -> None:
    records = [grant(n) for n in range(1, CSV_THRESHOLD)]
    assert render_digest(digest(*records)).csv_attachment is None


@pytest.mark.parametrize("count", [MAIN_ITEMS, MAIN_ITEMS + 1])
def test_the_thread_is_used_only_when_something_did_not_fit(count: int) -> None:
    rendered = render_digest(digest(*[grant(n) for n in range(1, count + 1)]))
    assert bool(rendered.thread) is (count > MAIN_ITEMS)
    assert ("more in the thread" in everything(rendered)) is (count > MAIN_ITEMS)


def test_a_standing_lock_is_listed_first_until_lifted_with_its_reason_escaped() -> None:
    locked_at = END - timedelta(days=3)  # placed days before the window: still listed
    lock = LockRecord("U0MALLORY", "U0SECADMIN", HOSTILE, locked_at)
    rendered = render_digest(
        build_digest(
            [grant(1)],
            window_start=START,
            window_end=END,
            now=END,
            chain_ok=True,
            tz=BERLIN,
            locks=[lock],
        )
    )
    text = everything(rendered)
    assert "attention" in rendered.main.text
    line = ":lock: <@U0MALLORY> locked by <@U0SECADMIN> <!date^"
    assert text.index("Needs attention") < text.index(line) < text.index("Grants (1)")
    assert "until an admin unlocks" in text
    for raw in RAW_MARKUP:
        assert raw not in text
    quiet = build_digest(
        [], window_start=START, window_end=END, now=END, chain_ok=True, tz=BERLIN, locks=[lock]
    )
    assert not quiet.is_empty and quiet.needs_attention == 1  # a lock alone is news


def test_many_standing_locks_never_push_a_live_failing_revocation_off_the_main_message() -> None:
    """Locks stand for days; a credential Vault refuses to revoke is live now. With more locks
    than the main message shows, the failing revocation must still be on it."""
    locks = [
        LockRecord(f"U0LOCKED{n}", "U0SECADMIN", "laptop stolen", END - timedelta(days=n))
        for n in range(1, MAIN_ITEMS + 2)
    ]
    failing = grant(
        1, ended_at=None, end_reason=None, status="revoking", revoke_failed=True, revoke_attempts=4
    )
    rendered = render_digest(
        build_digest(
            [failing],
            window_start=START,
            window_end=END,
            now=END,
            chain_ok=True,
            tz=BERLIN,
            locks=locks,
        )
    )
    main = json.dumps(rendered.main.blocks)
    assert ":x:" in main and "still live in Vault" in main
    assert main.count(":lock:") == MAIN_ITEMS - 1  # the locks fill the rest, then the thread


def test_a_dm_given_up_in_the_window_needs_attention_with_slacks_answer_escaped() -> None:
    notices = [
        GivenUpNotice("U0GONE", "user_disabled", END - timedelta(hours=2), request_id=7),
        GivenUpNotice("U0QUIET", TOO_OLD, END - timedelta(hours=1)),
        GivenUpNotice("U0HOSTILE", HOSTILE, END - timedelta(hours=1)),
        GivenUpNotice("U0BEFORE", "user_not_found", START - timedelta(seconds=1)),
    ]
    built = build_digest(
        [], window_start=START, window_end=END, now=END, chain_ok=True, tz=BERLIN, given_up=notices
    )
    assert built.needs_attention == 3
    text = everything(render_digest(built))
    assert "<@U0GONE> was never sent a message about #7" in text
    assert "Slack answered `user_disabled`" in text
    assert "<@U0QUIET> was never sent a message: Slack refused it for a week" in text
    assert "U0BEFORE" not in text
    for raw in RAW_MARKUP:
        assert raw not in text
