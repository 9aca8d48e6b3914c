"""The App Home tab: what each user sees (grants with Revoke / Extend, pending requests, requests
waiting for their decision, recent decisions), Slack's 100-block limit, escaping, and the view
built from real lifecycle state."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import yaml
from slack_sdk.models.views import View

from bot.domain.digest import LockRecord
from bot.domain.requests import RequestStatus, ValidRequest
from bot.policy import parse_policy
from bot.ports import RequestView
from bot.slack.home import MAX_LISTED, HomePublisher, home_view
from bot.slack.ids import ActionId, BlockId
from tests.unit.fakes import (
    APPROVER,
    BYSTANDER,
    EXAMPLE_POLICY,
    OTHER_APPROVER,
    REQUESTER,
    START,
    Harness,
    make_lifecycle,
)

S = RequestStatus
POLICY = parse_policy(EXAMPLE_POLICY)
HOUR = timedelta(hours=1)
HOSTILE = "<!channel> <@U0ADMIN> <https://evil.example|click> & stuff"
RAW_MARKUP = ("<!channel>", "<@U0ADMIN>", "<https://evil", "& stuff")
UNTIL = START + HOUR + timedelta(minutes=30)
UNTIL_TEXT = (
    f"until <!date^{int(UNTIL.timestamp())}^{{date_short_pretty}} {{time}}|2025-03-04 10:30 UTC>"
)

BASE = RequestView(
    id=42,
    requester=REQUESTER,
    resource="payments-db",
    description="Read-only SQL on the payments replica",
    duration=HOUR,
    reason="INC-4211 checkout errors",
    status=S.PENDING,
    created_at=START,
    approvers=(APPROVER, OTHER_APPROVER),
)
PENDING = BASE
ACTIVE = replace(
    BASE,
    id=41,
    status=S.ACTIVE,
    decided_by=APPROVER,
    decided_at=START + timedelta(minutes=30),
    expires_at=UNTIL,
)
REVOKING = replace(ACTIVE, id=40, status=S.REVOKING)
DENIED = replace(
    BASE, id=39, status=S.DENIED, decided_by=OTHER_APPROVER, decided_at=START + timedelta(minutes=5)
)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _texts(view: dict[str, Any]) -> list[str]:
    return [node["text"] for node in _walk(view["blocks"]) if isinstance(node.get("text"), str)]


def _buttons(view: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, action_id, value) of every button, in order."""
    return [
        (n["text"]["text"], n["action_id"], n["value"])
        for n in _walk(view["blocks"])
        if n.get("type") == "button"
    ]


def _build(
    user: str = REQUESTER,
    mine: Sequence[RequestView] = (),
    waiting: Sequence[RequestView] = (),
    recent: Sequence[RequestView] = (),
) -> dict[str, Any]:
    view = home_view(user, mine, waiting, recent, POLICY)
    assert View(**view).to_dict() == view  # valid and lossless per slack_sdk (≤ 100 blocks)
    return view


def _section_after(view: dict[str, Any], heading: str) -> list[str]:
    """Texts of the blocks that follow the section starting with ``heading``, up to the next
    heading or divider."""
    blocks = view["blocks"]
    start = next(
        i
        for i, b in enumerate(blocks)
        if b["type"] == "section" and b["text"]["text"].startswith(heading)
    )
    found = []
    for block in blocks[start + 1 :]:
        if block["type"] == "divider" or (
            block["type"] == "section" and block["text"]["text"].startswith("*Your")
        ):
            break
        found.extend(n["text"] for n in _walk(block) if isinstance(n.get("text"), str))
    return found


# -- what is shown ---------------------------------------------------------------------------------


def test_an_empty_home_still_offers_to_request_access() -> None:
    view = _build()
    assert view["type"] == "home"
    (actions,) = [b for b in view["blocks"] if b["type"] == "actions"]
    assert actions["block_id"] == BlockId.HOME_ACTIONS
    assert _buttons(view) == [("Request access", ActionId.OPEN_REQUEST_FORM.value, "home")]
    texts = "\n".join(_texts(view))
    for line in (
        "*Your active access*\nNone right now.",
        "*Your pending requests*\nNone.",
        "*Waiting for your decision*\nNothing — thank you.",
    ):
        assert line in texts
    assert "Recent decisions" not in texts


def test_an_active_grant_has_revoke_and_extend_with_its_id() -> None:
    view = _build(mine=[ACTIVE])
    shown = _section_after(view, "*Your active access*")
    assert shown[0] == f"*#41* `payments-db` 1h — INC-4211 checkout errors\n{UNTIL_TEXT}"
    grant_actions = [b for b in view["blocks"] if b.get("block_id") == BlockId.GRANT_ACTIONS]
    assert len(grant_actions) == 1
    assert _buttons(view)[1:] == [
        ("Revoke now", ActionId.REVOKE.value, "41"),
        ("Extend", ActionId.EXTEND.value, "41"),
    ]
    assert "None right now." not in "\n".join(_texts(view))


def test_a_grant_being_revoked_is_listed_without_buttons() -> None:
    view = _build(mine=[REVOKING])
    assert _section_after(view, "*Your active access*") == [
        f"*#40* `payments-db` 1h — INC-4211 checkout errors\n{UNTIL_TEXT}"
    ]
    assert [label for label, _, _ in _buttons(view)] == ["Request access"]


@pytest.mark.parametrize(
    ("pending", "status"),
    [
        (
            PENDING,
            f":hourglass_flowing_sand: Waiting for approval from <@{APPROVER}>, "
            f"<@{OTHER_APPROVER}>",
        ),
        (
            replace(PENDING, approvals_required=2, approved_by=(APPROVER,)),
            f":hourglass_flowing_sand: Waiting for approval from <@{APPROVER}>, "
            f"<@{OTHER_APPROVER}> — 1 of 2 approvals (<@{APPROVER}>)",
        ),
    ],
    ids=["one approval", "two approvals"],
)
def test_a_pending_request_shows_its_status_line(pending: RequestView, status: str) -> None:
    view = _build(mine=[pending])
    assert _section_after(view, "*Your pending requests*") == [
        f"*#42* `payments-db` 1h — INC-4211 checkout errors\n{status}"
    ]
    assert [label for label, _, _ in _buttons(view)] == ["Request access"]  # no buttons on it
    assert "*Your active access*\nNone right now." in _texts(view)


def test_break_glass_access_offers_revoke_but_no_extend() -> None:
    glass = replace(ACTIVE, break_glass=True, decided_by=REQUESTER)
    view = _build(mine=[glass])
    assert _buttons(view)[1:] == [("Revoke now", ActionId.REVOKE.value, "41")]


def test_a_pending_extension_says_what_it_extends() -> None:
    extension = replace(
        PENDING, id=43, kind="extension", parent_id=41, duration=timedelta(minutes=30)
    )
    view = _build(mine=[ACTIVE, extension])
    (line,) = _section_after(view, "*Your pending requests*")
    assert line.startswith("*#43* `payments-db` 30m (extension of #41) — ")


def test_requests_waiting_for_an_approver_have_approve_and_deny() -> None:
    other = replace(PENDING, id=44, requester=BYSTANDER, resource="orders-logs")
    view = _build(user=APPROVER, waiting=[PENDING, other])
    texts = _section_after(view, "*Waiting for your decision*")
    assert texts[0] == f"<@{REQUESTER}> asks: *#42* `payments-db` 1h — INC-4211 checkout errors"
    assert f"<@{BYSTANDER}> asks: *#44* `orders-logs` 1h — INC-4211 checkout errors" in texts
    assert _buttons(view)[1:] == [
        ("Approve", ActionId.APPROVE.value, "42"),
        ("Deny", ActionId.DENY.value, "42"),
        ("Approve", ActionId.APPROVE.value, "44"),
        ("Deny", ActionId.DENY.value, "44"),
    ]
    styles = [n.get("style") for n in _walk(view["blocks"]) if n.get("type") == "button"]
    assert styles == ["primary", "primary", "danger", "primary", "danger"]


def test_recent_decisions_are_listed() -> None:
    view = _build(recent=[DENIED, ACTIVE])
    texts = "\n".join(_texts(view))
    assert "*Recent decisions*" in texts
    contexts = [b for b in view["blocks"] if b["type"] == "context"]
    assert len(contexts) == 2
    first = contexts[0]["elements"][0]["text"]
    assert first.startswith(
        f"#39 `payments-db` for <@{REQUESTER}>: :no_entry: Denied by <@{OTHER_APPROVER}> at <!date^"
    )
    assert contexts[1]["elements"][0]["text"].startswith(
        f"#41 `payments-db` for <@{REQUESTER}>: :white_check_mark: Approved by <@{APPROVER}>"
    )


# -- limits and escaping ---------------------------------------------------------------------------


def _many(template: RequestView, count: int, first_id: int) -> list[RequestView]:
    return [replace(template, id=first_id + i) for i in range(count)]


def test_at_most_100_blocks_even_with_200_of_everything() -> None:
    mine = _many(ACTIVE, 200, 1000) + _many(PENDING, 200, 2000)
    view = _build(
        mine=mine,
        waiting=_many(replace(PENDING, requester=BYSTANDER), 200, 3000),
        recent=_many(DENIED, 200, 4000),
    )
    assert len(view["blocks"]) <= 100
    buttons = _buttons(view)
    assert buttons[0] == ("Request access", ActionId.OPEN_REQUEST_FORM.value, "home")
    assert [v for _, a, v in buttons if a == ActionId.REVOKE.value] == [
        str(1000 + i) for i in range(MAX_LISTED)
    ]
    assert [v for _, a, v in buttons if a == ActionId.APPROVE.value] == [
        str(3000 + i) for i in range(MAX_LISTED)
    ]
    texts = "\n".join(_texts(view))
    assert f"*#{2000 + MAX_LISTED - 1}*" in texts and f"*#{2000 + MAX_LISTED}*" not in texts
    assert "*Recent decisions*" in texts


@pytest.mark.parametrize("where", ["active", "pending", "waiting", "recent"])
def test_a_hostile_reason_is_escaped(where: str) -> None:
    views = {
        "active": replace(ACTIVE, reason=HOSTILE),
        "pending": replace(PENDING, reason=HOSTILE),
        "waiting": replace(PENDING, reason=HOSTILE),
        "recent": replace(DENIED, reason=HOSTILE, status=S.FAILED, failure=HOSTILE),
    }
    view = _build(
        user=APPROVER if where == "waiting" else REQUESTER,
        mine=[views[where]] if where in {"active", "pending"} else [],
        waiting=[views[where]] if where == "waiting" else [],
        recent=[views[where]] if where == "recent" else [],
    )
    dumped = json.dumps(view)
    for raw in RAW_MARKUP:
        assert raw not in dumped
    assert "&lt;!channel&gt;" in dumped


def test_a_long_reason_is_cut_and_stays_within_slack_limits() -> None:
    long = replace(PENDING, reason="x" * 500)
    view = _build(mine=[long], waiting=[long])
    for text in _texts(view):
        assert "x" * 201 not in text


def test_cutting_a_long_reason_never_splits_an_escaped_character() -> None:
    reason = "a" * 199 + "<b> and more"
    view = _build(mine=[replace(PENDING, reason=reason)])
    (line,) = _section_after(view, "*Your pending requests*")
    first_line = line.split("\n")[0]
    assert first_line.endswith("a" * 199 + "&lt;")


# -- from the lifecycle's real state ---------------------------------------------------------------


def _home(h: Harness, user: str) -> dict[str, Any]:
    lifecycle = h.lifecycle
    return _build(
        user,
        lifecycle.open_requests_of(user),
        lifecycle.waiting_for(user),
        lifecycle.recent_decisions(user),
    )


def _submit(
    h: Harness, reason: str = "INC-4211 checkout errors", resource: str = "payments-db"
) -> int:
    return h.lifecycle.submit(REQUESTER, ValidRequest(resource, HOUR, reason), None).view.id


def test_home_built_from_lifecycle_state() -> None:
    h = make_lifecycle()
    active = _submit(h)
    h.lifecycle.decide(active, APPROVER, approve=True)
    h.clock.advance(timedelta(minutes=1))
    denied = _submit(h)
    h.lifecycle.decide(denied, OTHER_APPROVER, approve=False)
    h.clock.advance(timedelta(minutes=1))
    pending = _submit(h, reason=HOSTILE)

    mine = _home(h, REQUESTER)
    assert [v for _, a, v in _buttons(mine) if a in {ActionId.REVOKE, ActionId.EXTEND}] == [
        str(active),
        str(active),
    ]
    until = START + HOUR
    assert any(
        f"*#{active}* `payments-db` 1h" in t and f"until <!date^{int(until.timestamp())}^" in t
        for t in _texts(mine)
    )
    (pending_line,) = _section_after(mine, "*Your pending requests*")
    assert pending_line.startswith(f"*#{pending}* ")
    assert "Waiting for approval from" in pending_line
    assert "*Waiting for your decision*\nNothing — thank you." in _texts(mine)
    recent = [b["elements"][0]["text"] for b in mine["blocks"] if b["type"] == "context"]
    assert [line.split(" ")[0] for line in recent] == [f"#{denied}", f"#{active}"]
    assert "<!channel>" not in json.dumps(mine)

    approver = _home(h, APPROVER)
    assert [(a, v) for _, a, v in _buttons(approver)][1:] == [
        (ActionId.APPROVE.value, str(pending)),
        (ActionId.DENY.value, str(pending)),
    ]
    assert "*Your active access*\nNone right now." in _texts(approver)
    # ALICE decided #active; #denied was BOB's alone.
    recent = [b["elements"][0]["text"] for b in approver["blocks"] if b["type"] == "context"]
    assert [line.split(" ")[0] for line in recent] == [f"#{active}"]
    assert "<!channel>" not in json.dumps(approver)

    bystander = _home(h, BYSTANDER)
    assert [label for label, _, _ in _buttons(bystander)] == ["Request access"]
    assert "Recent decisions" not in "\n".join(_texts(bystander))


def test_home_shows_two_approval_progress_and_hides_what_you_approved() -> None:
    raw = yaml.safe_load(EXAMPLE_POLICY)
    raw["resources"]["payments-db"]["approvers"] = [APPROVER, OTHER_APPROVER, "U0DAVE"]
    raw["resources"]["payments-db"]["approvals_required"] = 2
    h = make_lifecycle(yaml.safe_dump(raw))
    request_id = _submit(h)
    h.lifecycle.decide(request_id, APPROVER, approve=True)

    assert _buttons(_home(h, APPROVER))[1:] == []  # already approved: nothing to decide
    assert [v for _, a, v in _buttons(_home(h, "U0DAVE")) if a == ActionId.APPROVE] == [
        str(request_id)
    ]
    (line,) = _section_after(_home(h, REQUESTER), "*Your pending requests*")
    assert line.endswith(f"— 1 of 2 approvals (<@{APPROVER}>)")


# -- a locked user ---------------------------------------------------------------------------------

LOCKED_BY = "U0SECADMIN"
LOCK = LockRecord(REQUESTER, LOCKED_BY, HOSTILE, START)


def test_a_locked_user_sees_who_locked_them_when_and_why_at_the_top_escaped() -> None:
    view = home_view(REQUESTER, [ACTIVE], [PENDING], [], POLICY, None, False, lock=LOCK)
    assert View(**view).to_dict() == view
    banner = view["blocks"][1]["text"]["text"]
    assert "locked" in banner and f"<@{LOCKED_BY}>" in banner
    assert f"<!date^{int(START.timestamp())}^" in banner
    assert "&lt;!channel&gt; &lt;@U0ADMIN&gt;" in banner and "&amp; stuff" in banner
    assert not any(raw in json.dumps(view) for raw in RAW_MARKUP)


def test_a_locked_user_is_offered_only_what_the_lock_allows() -> None:
    free = home_view(REQUESTER, [ACTIVE], [PENDING], [], POLICY, None, False)
    locked = home_view(REQUESTER, [ACTIVE], [PENDING], [], POLICY, None, False, lock=LOCK)
    assert {action for _, action, _ in _buttons(free)} >= {
        ActionId.OPEN_REQUEST_FORM.value,
        ActionId.ENROL_PASSKEY.value,
        ActionId.EXTEND.value,
        ActionId.APPROVE.value,
        ActionId.DENY.value,
    }
    # Revoking their own grant is never refused (the lock revokes it anyway).
    assert _buttons(locked) == [("Revoke now", ActionId.REVOKE.value, "41")]
    assert any("asks:" in text for text in _texts(locked))  # still listed, nothing to click


def test_the_published_home_follows_the_lock_and_its_lifting() -> None:
    admin_policy = EXAMPLE_POLICY.replace(
        "delivery: wrapped\n", f"delivery: wrapped\nadmins: [{LOCKED_BY}]\n"
    )
    h = make_lifecycle(admin_policy)
    published: list[dict[str, Any]] = []

    class Client:
        def views_publish(self, user_id: str, view: dict[str, Any]) -> None:
            published.append(view)

    publish = HomePublisher(Client(), h.lifecycle)  # type: ignore[arg-type]
    h.lifecycle.lock_user(REQUESTER, LOCKED_BY, "laptop stolen <@U0ALL>")
    publish(REQUESTER)
    banner = published[-1]["blocks"][1]["text"]["text"]
    assert f"locked* by <@{LOCKED_BY}>" in banner and "laptop stolen &lt;@U0ALL&gt;" in banner
    assert "Request access" not in [label for label, _, _ in _buttons(published[-1])]
    h.lifecycle.unlock_user(REQUESTER, LOCKED_BY)
    publish(REQUESTER)
    assert "locked" not in json.dumps(published[-1])
    assert "Request access" in [label for label, _, _ in _buttons(published[-1])]
