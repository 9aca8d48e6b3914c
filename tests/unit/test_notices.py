"""The notice outbox gives up on what Slack will never take: a deactivated or unknown recipient,
an archived audit channel, or a notice refused for a week. Given up means never tried again,
one audit event (recipient and reason, never the text), one warning, and the queue moves on."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from sqlmodel import Session, col, select

from bot.audit import AuditAction, verify_chain
from bot.digest import DailyDigest
from bot.domain.digest import AttentionKind
from bot.domain.notices import GIVE_UP_AFTER, TOO_OLD, AuditPost, NoticeKind, give_up_reason
from bot.lifecycle.notices import write_notice
from bot.slack.notifier import delivery_error
from bot.store.db import transaction
from bot.store.models import AuditEvent, Notice
from tests.unit.fakes import APPROVER, REQUESTER, START, Harness, make_lifecycle

SECRET_ISH = "your grant on payments-db was revoked"


@pytest.fixture
def h() -> Harness:
    return make_lifecycle()


def queue(
    h: Harness, user: str = REQUESTER, text: str = SECRET_ISH, kind: str = NoticeKind.DM
) -> int:
    with transaction(h.engine) as session:
        notice_id = write_notice(session, h.clock.now(), user, text, None, kind=kind).id
    assert notice_id is not None
    return notice_id


def notice(h: Harness, notice_id: int) -> Notice:
    with Session(h.engine) as session:
        found = session.get(Notice, notice_id)
        assert found is not None
        return found


def given_up_events(h: Harness) -> list[AuditEvent]:
    with Session(h.engine) as session:
        query = select(AuditEvent).where(AuditEvent.action == AuditAction.NOTICE_GIVEN_UP)
        return list(session.exec(query.order_by(col(AuditEvent.id))))


def sends_to(h: Harness, user: str) -> int:
    return sum(1 for args in h.notifier.of("send") if args[0] == user)


def test_a_dm_to_a_deactivated_user_is_given_up_at_once_and_the_queue_moves_on(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.notifier.refusals[REQUESTER] = "user_disabled"
    gone = queue(h, REQUESTER)
    after = queue(h, APPROVER, "queued behind it")
    with caplog.at_level(logging.WARNING, logger="bot.lifecycle.notices"):
        assert h.lifecycle.notices.send_queued() == 1
    assert notice(h, after).sent_at is not None  # not held back by the one given up
    given_up = notice(h, gone)
    assert given_up.given_up_at is not None and given_up.sent_at is None
    assert given_up.attempts == 1 and "disabled" in (given_up.last_error or "")
    (event,) = given_up_events(h)
    assert event.actor == "debug-access" and SECRET_ISH not in event.details
    assert f'"recipient":"{REQUESTER}"' in event.details.replace(" ", "")
    assert '"reason":"user_disabled"' in event.details.replace(" ", "")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"notice {gone}" in warning.getMessage() and REQUESTER in warning.getMessage()
    assert SECRET_ISH not in caplog.text

    h.clock.advance(timedelta(hours=1))
    h.tick()
    assert sends_to(h, REQUESTER) == 1  # never tried again
    assert len(given_up_events(h)) == 1
    with Session(h.engine) as session:
        assert verify_chain(session).ok


def test_a_notice_refused_for_a_week_is_given_up_and_not_before(h: Harness) -> None:
    h.notifier.slack_down = True
    notice_id = queue(h)
    h.clock.advance(GIVE_UP_AFTER - timedelta(minutes=1))
    h.lifecycle.notices.send_queued()
    assert notice(h, notice_id).given_up_at is None  # six days and 23 hours: still retried
    h.clock.advance(timedelta(minutes=2))
    h.lifecycle.notices.send_queued()
    assert notice(h, notice_id).given_up_at is not None
    (event,) = given_up_events(h)
    assert f'"reason":"{TOO_OLD}"' in event.details.replace(" ", "")
    h.notifier.slack_down = False
    h.clock.advance(timedelta(hours=1))
    assert h.lifecycle.notices.send_queued() == 0


def test_an_audit_post_to_an_archived_channel_is_given_up(h: Harness) -> None:
    h.notifier.audit_refusal = "is_archived"
    notice_id = queue(
        h, APPROVER, AuditPost("locked", "locked by <@U0A>").dumps(), NoticeKind.AUDIT
    )
    h.lifecycle.notices.send_queued()
    assert notice(h, notice_id).given_up_at is not None
    assert len(given_up_events(h)) == 1


def test_a_refusal_that_may_pass_is_retried(h: Harness) -> None:
    h.notifier.refusals[REQUESTER] = "ratelimited"
    notice_id = queue(h)
    assert h.lifecycle.notices.send_queued() == 0
    assert notice(h, notice_id).given_up_at is None and given_up_events(h) == []


def test_give_up_reason_is_slacks_code_for_good_refusals_or_the_age() -> None:
    fresh, old = START, START + GIVE_UP_AFTER
    assert give_up_reason(NoticeKind.DM, "user_not_found", START, fresh) == "user_not_found"
    assert give_up_reason(NoticeKind.DM, "cannot_dm_bot", START, fresh) == "cannot_dm_bot"
    assert give_up_reason(NoticeKind.AUDIT, "not_in_channel", START, fresh) == "not_in_channel"
    # The bot's own token failing stops every notice: an admin fixes it, nothing is lost.
    assert give_up_reason(NoticeKind.DM, "account_inactive", START, fresh) is None
    assert give_up_reason(NoticeKind.DM, "invalid_auth", START, fresh) is None
    assert give_up_reason(NoticeKind.DM, None, START, fresh) is None
    assert give_up_reason(NoticeKind.DM, None, START, old) == TOO_OLD


@dataclass
class Answer:
    """What ``SlackApiError.response`` offers the notifier: the body's fields and headers."""

    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.body.get(key)


def test_the_slack_notifier_passes_slacks_error_code_on() -> None:
    refused = SlackApiError("refused", Answer({"ok": False, "error": "user_not_found"}))
    error = delivery_error("Slack refused the DM", refused)
    assert error.code == "user_not_found" and "user_not_found" in str(error)
    assert delivery_error("Slack refused the DM", OSError("unreachable")).code is None


def test_the_digest_lists_a_dm_given_up_in_its_window_and_not_other_kinds(h: Harness) -> None:
    h.notifier.refusals[REQUESTER] = "user_not_found"
    h.notifier.audit_refusal = "is_archived"
    queue(h, REQUESTER)
    queue(h, APPROVER, AuditPost("locked", "locked by <@U0A>").dumps(), NoticeKind.AUDIT)
    h.lifecycle.notices.send_queued()
    h.lifecycle.notices.send_queued()
    assert len(given_up_events(h)) == 2
    digests = DailyDigest(h.engine, h.policy, h.notifier, h.clock)
    (item,) = digests.build(h.clock.now() + timedelta(hours=1)).attention
    assert item.kind is AttentionKind.NOTICE_GIVEN_UP
    assert (item.people, item.note) == ((REQUESTER,), "user_not_found")
    assert digests.build(h.clock.now() + timedelta(days=1, hours=1)).attention == ()
