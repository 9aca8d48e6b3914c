"""The App Home off the request path: ``HomeRefresher`` coalesces a burst of changes per user
into one publish, never publishes one user twice at once, publishes again when a change lands
during a publish, and survives a failing publish. And the queries behind a Home are bounded:
the same number of statements with 3 or 60 requests pending (``Views``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event

from bot.domain.requests import ValidRequest
from bot.slack.home import HomeRefresher
from tests.unit.fakes import APPROVER, REQUESTER, make_lifecycle

HOUR = timedelta(hours=1)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def published() -> Iterator[tuple[list[str], HomeRefresher]]:
    seen: list[str] = []
    refresher = HomeRefresher(seen.append, workers=2, settle=0.05)
    yield seen, refresher
    refresher.close()


def test_a_burst_of_changes_for_one_user_is_one_publish(
    published: tuple[list[str], HomeRefresher],
) -> None:
    seen, refresher = published
    for _ in range(50):
        refresher.refresh(["U1", "U2"])
        refresher("U1")
    wait_for(lambda: refresher.pending() == 0)
    assert sorted(seen) == ["U1", "U2"]


def test_a_change_during_a_publish_is_published_again_after_it_never_alongside() -> None:
    running: list[str] = []
    overlapped: list[str] = []
    seen: list[str] = []
    first_started, release = threading.Event(), threading.Event()

    def publish(user: str) -> None:
        if user in running:
            overlapped.append(user)
        running.append(user)
        try:
            if not first_started.is_set():
                first_started.set()
                release.wait(5)
            seen.append(user)
        finally:
            running.remove(user)

    refresher = HomeRefresher(publish, workers=3, settle=0.0)
    try:
        refresher("U1")
        assert first_started.wait(5)
        refresher("U1")  # a change after the first publish read the state
        time.sleep(0.1)
        assert seen == [] and overlapped == []  # the other workers left U1 alone
        release.set()
        wait_for(lambda: refresher.pending() == 0)
        assert seen == ["U1", "U1"] and overlapped == []
    finally:
        refresher.close()


def test_a_failing_publish_is_logged_and_the_rest_go_on(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def publish(user: str) -> None:
        if user == "UBROKEN":
            raise RuntimeError("a bug in one Home")
        seen.append(user)

    refresher = HomeRefresher(publish, workers=1, settle=0.0)
    try:
        refresher.refresh(["UBROKEN", "U2"])
        wait_for(lambda: refresher.pending() == 0)
    finally:
        refresher.close()
    assert seen == ["U2"]
    assert "could not refresh the App Home of UBROKEN" in caplog.text


def test_the_queries_behind_a_home_do_not_grow_with_the_backlog() -> None:
    """Before: ``waiting_for`` built a view of every pending request with two queries each,
    for every affected user on every change (3 x (2P + 1) statements per submit)."""

    def statements(pending: int) -> int:
        h = make_lifecycle()
        for number in range(pending):
            valid = ValidRequest("payments-db", HOUR, f"INC-{number} backlog")
            h.lifecycle.submit(f"U0REQ{number:05d}", valid, None)
        h.lifecycle.decide(h.lifecycle.submit(REQUESTER, valid, None).view.id, APPROVER, True)
        counted: list[str] = []

        def count(*args: object) -> None:
            counted.append(str(args[2]))

        event.listen(h.engine, "before_cursor_execute", count)
        waiting = h.lifecycle.waiting_for(APPROVER, limit=15)
        mine = h.lifecycle.open_requests_of(REQUESTER)
        recent = h.lifecycle.recent_decisions(APPROVER)
        event.remove(h.engine, "before_cursor_execute", count)
        assert len(waiting) == min(pending, 15) and len(mine) == 1 and len(recent) == 1
        return len(counted)

    assert statements(3) == statements(60)
