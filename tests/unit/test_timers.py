"""The timer tick (``bot.scheduler``) and its claims (``bot.store.due``), on SQLite with a fake
clock: due rows are held by one replica at a time, each grant ends once however many replicas
tick, a failing row is retried later without stopping the rest, a replica that dies lets go
when its hold runs out, and start-up schedules no job per grant.

PostgreSQL's ``FOR UPDATE SKIP LOCKED`` is tested in ``tests/integration/test_due_postgres.py``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, text
from sqlmodel import Session, col, select

from bot.audit import AuditAction
from bot.domain.requests import ValidRequest
from bot.lifecycle import DueWork
from bot.scheduler import GUARDED_HOLD, HOLD, RETRY_AFTER, TICK_JOB, DueWorkRunner, Timers
from bot.store import schema
from bot.store.db import make_engine
from bot.store.due import claim_next, let_go
from bot.store.models import AuditEvent, Grant, GrantStatus
from tests.unit.fakes import APPROVER, REQUESTER, START, FakeClock, Harness, make_lifecycle
from tests.unit.last_release import TABLE, write_persisted_jobs

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A file-backed SQLite database, as a replica opens it (several engines may share it)."""
    made = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    schema.upgrade(made)
    yield made
    made.dispose()


def grants(h: Harness, count: int, policy_duration: timedelta = HOUR) -> list[int]:
    """``count`` active grants, all expiring at START + ``policy_duration``."""
    ids = []
    for number in range(count):
        valid = ValidRequest("payments-db", policy_duration, f"INC-{number} timers")
        request_id = h.lifecycle.submit(REQUESTER, valid, None).view.id
        h.lifecycle.decide(request_id, APPROVER, approve=True)
        with Session(h.engine) as session:
            grant = session.exec(select(Grant).where(Grant.request_id == request_id)).one()
        ids.append(grant.id)
        h.issuer.unwrap(grant.wrap_accessor)  # the requester collects the credentials
    return ids


def expired_events(engine: Engine) -> dict[int | None, int]:
    with Session(engine) as session:
        rows = session.exec(
            select(AuditEvent.request_id, func.count())
            .where(AuditEvent.action == AuditAction.EXPIRED)
            .group_by(col(AuditEvent.request_id))
        )
        return dict(rows.all())


def grant_expiry(h: Harness) -> DueWork:
    return next(w for w in h.lifecycle.due_work() if w.name == "grant expiry")


# -- claims --------------------------------------------------------------------------------------


def test_a_claimed_row_is_held_until_the_hold_runs_out(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    (grant_id,) = grants(h, 1)
    now = START + HOUR
    work = grant_expiry(h)

    def claim(at: timedelta = timedelta(0)) -> int | None:
        moment = now + at
        return claim_next(engine, Grant, work.due(moment), work.oldest_first, moment, moment + HOLD)

    assert claim_next(engine, Grant, work.due(now - SECOND), work.oldest_first, now, now) is None
    assert claim() == grant_id
    assert claim() is None  # another replica, the same instant: held
    assert claim(HOLD - SECOND) is None
    assert claim(HOLD) == grant_id  # the holder died: taken up again


def test_letting_go_releases_a_row_done_and_holds_one_still_due(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    first, second = grants(h, 2)
    now = START + HOUR
    work = grant_expiry(h)
    held = now + HOLD
    assert claim_next(engine, Grant, work.due(now), work.oldest_first, now, held) == first
    assert let_go(engine, Grant, first, held, work.due(now), now + RETRY_AFTER) is True
    with Session(engine) as session:
        assert session.get(Grant, first).next_attempt_at is not None  # type: ignore[union-attr]
    assert claim_next(engine, Grant, work.due(now), work.oldest_first, now, held) == second
    h.clock.set(now)
    h.lifecycle.end_grant(second, "expired")
    assert let_go(engine, Grant, second, held, work.due(now), now + RETRY_AFTER) is False
    with Session(engine) as session:
        assert session.get(Grant, second).next_attempt_at is None  # type: ignore[union-attr]
    # A hold that is no longer ours (it ran out and another replica took it) is left alone.
    assert let_go(engine, Grant, first, held, work.due(now), now) is False
    with Session(engine) as session:
        assert session.get(Grant, first).next_attempt_at is not None  # type: ignore[union-attr]


# -- the tick --------------------------------------------------------------------------------------


def test_two_replicas_ticking_at_once_end_each_grant_once(engine: Engine) -> None:
    """Two processes' worth of engines and lifecycles on one database, ticking together."""
    clock = FakeClock(START)
    one = make_lifecycle(engine=engine, clock=clock)
    ids = grants(one, 12)
    other_engine = make_engine(str(engine.url))
    two = make_lifecycle(engine=other_engine, clock=clock, issuer=one.issuer)
    clock.set(START + HOUR)
    runners = [DueWorkRunner(r.engine, r.lifecycle.due_work(), clock) for r in (one, two)]
    barrier = threading.Barrier(2)
    done: list[int] = []

    def tick(runner: DueWorkRunner) -> None:
        barrier.wait()
        # A few ticks each, as replicas keep ticking: a grant held by the other replica for
        # another kind of work (its collection check) is ended at a following tick.
        done.extend(runner.tick()["grant expiry"] for _ in range(3))

    threads = [threading.Thread(target=tick, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    other_engine.dispose()

    assert sum(done) == len(ids)
    assert expired_events(engine) == {r: 1 for r in expired_events(engine)}
    assert len(expired_events(engine)) == len(ids)
    assert one.issuer.count("revoke") == len(ids)  # nobody revoked anything twice
    assert not one.issuer.live


def test_a_failing_row_is_logged_and_retried_later_and_the_rest_go_on(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_lifecycle(engine=engine)
    broken, _, _ = grants(h, 3)
    real = grant_expiry(h)

    def run(grant_id: int) -> object:
        if grant_id == broken:
            raise RuntimeError("a bug in one row")
        return real.run(grant_id)

    work = DueWork(real.name, real.table, real.due, real.oldest_first, run)
    runner = DueWorkRunner(engine, [work], h.clock)
    h.clock.set(START + HOUR)
    with caplog.at_level(logging.INFO, "bot.scheduler"):
        assert runner.tick() == {"grant expiry": 2}
    assert "grant expiry of row 1 failed" in caplog.text and "RuntimeError" in caplog.text
    assert "still due; tried again at" in caplog.text
    assert sorted(expired_events(engine)) == [2, 3]

    assert runner.tick() == {}  # not at every tick
    h.clock.advance(RETRY_AFTER - SECOND)
    assert runner.tick() == {}
    h.clock.advance(SECOND)
    work = DueWork(real.name, real.table, real.due, real.oldest_first, real.run)  # bug fixed
    assert DueWorkRunner(engine, [work], h.clock).tick() == {"grant expiry": 1}
    assert sorted(expired_events(engine)) == [1, 2, 3]


def test_a_failing_lookup_does_not_stop_the_other_kinds(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_lifecycle(engine=engine)
    grants(h, 1)
    real = grant_expiry(h)

    def broken_due(now: object) -> object:
        raise RuntimeError("the query is wrong")

    broken = DueWork("broken", real.table, broken_due, real.oldest_first, real.run)  # type: ignore[arg-type]
    h.clock.set(START + HOUR)
    assert DueWorkRunner(engine, [broken, real], h.clock).tick() == {"grant expiry": 1}
    assert "could not look for due broken work" in caplog.text


def test_a_tick_never_runs_twice_at_once_in_one_process(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    grants(h, 2)
    real = grant_expiry(h)
    inner: list[object] = []
    runner: DueWorkRunner

    def run(grant_id: int) -> object:
        inner.append(runner.tick())  # a second tick while this one runs: returns at once
        return real.run(grant_id)

    runner = DueWorkRunner(
        engine, [DueWork(real.name, real.table, real.due, real.oldest_first, run)], h.clock
    )
    h.clock.set(START + HOUR)
    assert runner.tick() == {"grant expiry": 2}
    assert inner == [{}, {}]


def test_kinds_take_turns_so_a_backlog_does_not_hold_up_the_others(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    grants(h, 3)
    for number in range(3):
        valid = ValidRequest("payments-db", HOUR, f"INC-{number} waits")
        h.lifecycle.submit(REQUESTER, valid, None)
    order: list[str] = []

    def recorded(work: DueWork) -> DueWork:
        def run(key: int) -> object:
            order.append(work.name)
            return work.run(key)

        return DueWork(work.name, work.table, work.due, work.oldest_first, run)

    kinds = [
        recorded(w) for w in h.lifecycle.due_work() if w.name in {"grant expiry", "pending expiry"}
    ]
    h.clock.set(START + 2 * HOUR)
    assert DueWorkRunner(engine, kinds, h.clock).tick() == {"grant expiry": 3, "pending expiry": 3}
    assert order == ["grant expiry", "pending expiry"] * 3


def test_shutting_down_claims_nothing_more(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    grants(h, 3)
    real = grant_expiry(h)
    runner: DueWorkRunner

    def run(grant_id: int) -> object:
        runner.stopping.set()  # SIGTERM arrives while the first row is worked on
        return real.run(grant_id)

    runner = DueWorkRunner(
        engine, [DueWork(real.name, real.table, real.due, real.oldest_first, run)], h.clock
    )
    h.clock.set(START + HOUR)
    assert runner.tick() == {"grant expiry": 1}  # the row in hand is finished, no other
    with Session(engine) as session:
        held = session.exec(select(Grant).where(col(Grant.next_attempt_at).is_not(None))).all()
    assert held == []  # nothing left held for another replica to wait out
    assert DueWorkRunner(engine, h.lifecycle.due_work(), h.clock).tick()["grant expiry"] == 2


def test_workers_run_due_rows_side_by_side_never_more_than_configured(engine: Engine) -> None:
    """1,000 grants expiring in one minute took one revocation after another; now ``workers``
    at once, which also bounds the revocations in flight toward Vault."""
    h = make_lifecycle(engine=engine)
    grants(h, 10)
    real = grant_expiry(h)
    lock = threading.Lock()
    running: list[int] = []
    most = [0]
    # The first four meet before any goes on: four at once is shown, not hoped for from a
    # sleep (a busy machine may start the fourth after the first returned). A fifth at once
    # would be seen while they are still in (the sleep stands for a Vault round trip).
    first_four = threading.Barrier(4, timeout=10)
    started = itertools.count()

    def run(grant_id: int) -> object:
        with lock:
            running.append(grant_id)
            most[0] = max(most[0], len(running))
        if next(started) < 4:
            first_four.wait()
        time.sleep(0.05)
        with lock:
            running.remove(grant_id)
            return real.run(grant_id)  # one writer at a time on SQLite

    work = DueWork(real.name, real.table, real.due, real.oldest_first, run)
    runner = DueWorkRunner(engine, [work], h.clock, workers=4)
    h.clock.set(START + HOUR)
    assert runner.tick() == {"grant expiry": 10}
    assert most[0] == 4
    assert sorted(expired_events(engine).values()) == [1] * 10
    assert runner.tick() == {}


class Killed(BaseException):
    """The process dies mid-run (SIGKILL): nothing after this line of the tick runs."""


def test_a_replica_killed_while_resolving_a_leftover_holds_it_only_briefly(
    engine: Engine,
) -> None:
    """A crash's leftover is resolved under the request's lock, which dies with its process: a
    replica killed while at it must not leave the row held for the long ``HOLD`` (a test once
    waited 2 minutes for one request of a burst because the killed tick had just claimed it)."""
    h = make_lifecycle(engine=engine)
    grants(h, 1)
    real = grant_expiry(h)

    def killed(key: int) -> object:
        raise Killed

    def run_as(guarded: bool, run: Callable[[int], object]) -> DueWorkRunner:
        work = DueWork(real.name, real.table, real.due, real.oldest_first, run, guarded=guarded)
        return DueWorkRunner(engine, [work], h.clock)

    h.clock.set(START + HOUR)
    with pytest.raises(Killed):
        run_as(True, killed).tick()
    h.clock.advance(GUARDED_HOLD - SECOND)
    assert run_as(True, real.run).tick() == {}  # still held, for a moment
    h.clock.advance(SECOND)
    assert run_as(True, real.run).tick() == {"grant expiry": 1}
    assert list(expired_events(engine).values()) == [1]

    # Unguarded work keeps the long hold: nothing else stops a second replica doing it at once.
    grants(h, 1)
    h.clock.set(START + 3 * HOUR)
    with pytest.raises(Killed):
        run_as(False, killed).tick()
    h.clock.advance(GUARDED_HOLD)
    assert run_as(False, real.run).tick() == {}
    h.clock.advance(HOLD - GUARDED_HOLD)
    assert run_as(False, real.run).tick() == {"grant expiry": 1}
    assert list(expired_events(engine).values()) == [1, 1]


def test_only_the_work_done_under_the_request_lock_is_guarded(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    guarded = {work.name for work in h.lifecycle.due_work() if work.guarded}
    assert guarded == {"interrupted approval", "interrupted issue"}


# -- APScheduler ---------------------------------------------------------------------------------


def test_start_up_with_many_grants_schedules_one_tick_and_no_job_per_grant(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    ids = grants(h, 40)
    with Session(engine) as session:  # half of them expired while the bot was down
        for grant_id in ids[:20]:
            grant = session.get(Grant, grant_id)
            assert grant is not None
            grant.expires_at = START + HOUR / 2
            session.add(grant)
        session.commit()
    h.clock.set(START + HOUR - SECOND)
    timers = Timers(DueWorkRunner(engine, h.lifecycle.due_work(), h.clock), SECOND)
    timers.start()
    try:
        assert [job.id for job in timers.scheduler.get_jobs()] == [TICK_JOB]
        job = timers.scheduler.get_job(TICK_JOB)
        assert (job.max_instances, job.coalesce) == (1, True)
        # The first tick runs at start: the twenty overdue grants end, the others stay.
        assert wait_for(lambda: len(expired_events(engine)) == 20)
    finally:
        timers.shutdown()
    assert not timers.scheduler.running
    with Session(engine) as session:
        statuses = session.exec(select(Grant.status)).all()
    assert sorted(statuses).count(GrantStatus.ACTIVE.value) == 20


def test_the_last_release_jobs_do_no_harm_and_are_left_alone(engine: Engine) -> None:
    h = make_lifecycle(engine=engine)
    (grant_id,) = grants(h, 1)
    pending = h.lifecycle.submit(REQUESTER, ValidRequest("payments-db", HOUR, "x y"), None)
    jobs = write_persisted_jobs(
        engine,
        end_grant_at={grant_id: START + HOUR},
        expire_request_at={pending.view.id: START + HOUR},
    )
    assert jobs == ["grant-1-end", "request-2-expire", "sweep"]
    with engine.connect() as conn:
        before = conn.execute(text(f"SELECT * FROM {TABLE} ORDER BY id")).all()

    h.clock.set(START + HOUR)
    timers = Timers(DueWorkRunner(engine, h.lifecycle.due_work(), h.clock), SECOND)
    timers.start()
    try:
        assert wait_for(lambda: len(expired_events(engine)) == 1)
        assert wait_for(lambda: h.lifecycle.get(pending.view.id).status.value == "expired")
    finally:
        timers.shutdown()
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT * FROM {TABLE} ORDER BY id")).all() == before


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
