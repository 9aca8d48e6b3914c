"""Timers: a short tick on every replica that does whatever the database says is due, and the
daily digest's cron job. APScheduler 3 runs both, with its in-memory job store.

Nothing is scheduled per grant or per request, and nothing about timers is stored: every due
time is a column (``bot.lifecycle.due`` lists the kinds of due work). Every ``tick`` seconds
(``TIMER_TICK_SECONDS``) each replica claims due rows one at a time, holding each while its
use case runs (``bot.store.due``), and goes round the kinds until none has anything due, so a
long backlog (after downtime) does not keep the other kinds waiting. Start-up is the same
tick: a grant that expired while the bot was down is simply due.

Each replica works on up to ``workers`` rows at once (``TIMER_WORKERS``): a thousand grants
expiring in the same minute are revoked side by side, not one after another, and the same
number bounds how many revocations a replica has in flight toward Vault at any moment.

Exactly once with any number of replicas and workers: a row is claimed by one worker at a
time, and the use case claims it again for its own state change. Nothing stalls: a failing row
is logged and left held until ``RETRY_AFTER``, and the tick goes on with the next; no error
leaves the tick, which APScheduler never runs twice at once in one process (``max_instances=1``,
coalesced).

The last release's persisted jobs (table ``apscheduler_jobs``) are neither read nor removed:
the table belongs to that release, and what its rows stood for is due in the database anyway.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import ThreadPoolExecutor as WorkerPool
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from bot.lifecycle import DueWork, OwnedElsewhere
from bot.logs import log_context
from bot.ports import Clock
from bot.store.due import claim_next, let_go, release
from bot.store.models import Grant

log = logging.getLogger(__name__)

TICK_JOB = "due-work"
DIGEST_JOB = "daily-digest"
#: How long a claimed row is left alone by the other replicas while its use case runs. Longer
#: than any one use case takes; if one ever takes longer, its own claim keeps it exactly-once.
HOLD = timedelta(minutes=2)
#: The hold of work that its use case guards with the request's lock (``DueWork.guarded``): if
#: this replica is killed mid-run, another takes the row up this soon, not after ``HOLD``. Two
#: replicas never both do it: the second cannot take the lock while the first is alive.
GUARDED_HOLD = timedelta(seconds=5)
#: When a row that is still due after its use case ran (it raised, or could not finish) is
#: taken up again: later, not at every tick.
RETRY_AFTER = timedelta(minutes=1)
#: When a row whose owner is alive (``OwnedElsewhere``: being issued or delivered) is looked at
#: again: soon, since its owner finishes within seconds.
OWNED_RECHECK = timedelta(seconds=2)
#: Rows one replica works on at once, unless configured (``TIMER_WORKERS``).
WORKERS = 8


class DueWorkRunner:
    """One tick: claim and run every row that is due now, the kinds taking turns, up to
    ``workers`` rows at once."""

    def __init__(
        self,
        engine: Engine,
        work: Sequence[DueWork],
        clock: Clock,
        hold: timedelta = HOLD,
        guarded_hold: timedelta = GUARDED_HOLD,
        retry_after: timedelta = RETRY_AFTER,
        also: Sequence[tuple[str, Callable[[], int]]] = (),
        workers: int = 1,
    ) -> None:
        self.engine = engine
        self.workers = workers
        self._pool = WorkerPool(max_workers=workers, thread_name_prefix="timers")
        self._slots = threading.BoundedSemaphore(workers)
        self._counted = threading.Lock()
        self.work = tuple(work)
        self.also = tuple(also)
        self.clock = clock
        self.hold = hold
        self.guarded_hold = guarded_hold
        self.retry_after = retry_after
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self._running = threading.Lock()

    def tick(self) -> Counter[str]:
        """Run what is due now; return how many rows of each kind were done. Never raises, and
        returns at once if a tick is already running in this process."""
        if not self._running.acquire(blocking=False):
            return Counter()
        self.idle.clear()
        done: Counter[str] = Counter()
        try:
            self._due_rows(done)
            for name, run in self.also:  # work that claims its own rows (the notice outbox)
                if self.stopping.is_set():
                    break
                try:
                    done[name] += run()
                except Exception:
                    log.exception("timers: %s failed", name)
            done += Counter()  # drops the zero counts of ``also``
        finally:
            self.idle.set()
            self._running.release()
        if done:
            log.info("timers: %s", ", ".join(f"{kind} {n}" for kind, n in sorted(done.items())))
        return done

    def _due_rows(self, done: Counter[str]) -> None:
        """Claim due rows, the kinds taking turns (one row each per round, a kind dropped once
        it has nothing due), each run on a worker as soon as one is free; return when all ran.
        """
        running: list[Future[None]] = []
        try:
            pending = list(self.work)
            while pending and not self.stopping.is_set():
                still_due = []
                for kind in pending:
                    self._slots.acquire()  # a free worker first: claim only what can run now
                    claimed = self._claim(kind)
                    if claimed is None:
                        self._slots.release()
                        continue
                    still_due.append(kind)
                    running.append(self._pool.submit(self._run, kind, *claimed, done))
                pending = still_due
        finally:
            for future in running:
                future.result()

    def _claim(self, kind: DueWork) -> tuple[int, datetime] | None:
        """Hold one due row of ``kind``: its id and until when; None when none is due."""
        now = self.clock.now()
        held_until = now + (self.guarded_hold if kind.guarded else self.hold)
        try:
            key = claim_next(
                self.engine, kind.table, kind.due(now), kind.oldest_first, now, held_until
            )
        except Exception:
            log.exception("timers: could not look for due %s work", kind.name)
            return None
        if key is not None and self.stopping.is_set():  # stopping: leave it to the others
            self._release(kind, key, held_until)
            return None
        return None if key is None else (key, held_until)

    def _run(self, kind: DueWork, key: int, held_until: datetime, done: Counter[str]) -> None:
        """Run ``kind``'s use case for row ``key``, then let the row go. Never raises."""
        try:
            self._run_one(kind, key, held_until, done)
        finally:
            self._slots.release()

    def _run_one(self, kind: DueWork, key: int, held_until: datetime, done: Counter[str]) -> None:
        field = "grant_id" if kind.table is Grant else "request_id"
        try:
            with log_context(**{field: key}):
                kind.run(key)
            with self._counted:
                done[kind.name] += 1
        except OwnedElsewhere:
            # A live process is doing it (issuing, delivering): not a failure. Look again in a
            # moment, not in a minute, so neither this nor another kind of work on the row
            # (its expiry, a revocation retry once it is given up) waits out a long hold.
            self._let_go(kind, key, held_until, OWNED_RECHECK, quiet=True)
            return
        except Exception:
            log.exception("timers: %s of row %s failed", kind.name, key)
        self._let_go(kind, key, held_until)

    def _let_go(
        self,
        kind: DueWork,
        key: int,
        held_until: datetime,
        retry_after: timedelta | None = None,
        quiet: bool = False,
    ) -> None:
        after = self.clock.now()
        retry_at = after + (retry_after or self.retry_after)
        try:
            held = let_go(self.engine, kind.table, key, held_until, kind.due(after), retry_at)
            if held and not quiet:
                log.warning(
                    "timers: %s of row %s is still due; tried again at %s",
                    kind.name,
                    key,
                    retry_at.isoformat(timespec="seconds"),
                )
        except Exception:  # the hold runs out by itself
            log.exception("timers: could not let go of row %s after its %s", key, kind.name)

    def _release(self, kind: DueWork, key: int, held_until: datetime) -> None:
        try:
            release(self.engine, kind.table, key, held_until)
        except Exception:  # the hold runs out by itself
            log.exception("timers: could not release row %s", key)


class Timers:
    """The tick and the digest on an APScheduler whose jobs live in this process only."""

    def __init__(self, runner: DueWorkRunner, tick: timedelta) -> None:
        self.runner = runner
        self.tick = tick
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=2)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )
        # A tick that outlasts the interval is expected (a backlog, a slow Vault): APScheduler's
        # "skipped: maximum number of running instances reached" would say so every interval.
        scheduler_log = logging.getLogger("apscheduler.scheduler")
        if _NO_SKIPPED_TICKS not in scheduler_log.filters:
            scheduler_log.addFilter(_NO_SKIPPED_TICKS)

    def start(self) -> None:
        """Start ticking now (the first tick does whatever fell due while the bot was down)."""
        self.scheduler.add_job(
            _never_raises(self.runner.tick, "the timer tick"),
            trigger="interval",
            seconds=self.tick.total_seconds(),
            next_run_time=datetime.now(UTC),  # APScheduler keeps wall-clock time
            id=TICK_JOB,
            name=TICK_JOB,
            misfire_grace_time=None,
        )
        self.scheduler.start()

    def schedule_digest(self, trigger: BaseTrigger, run: Callable[[], object]) -> None:
        """The daily digest on its cron trigger (``DigestRun`` makes replicas post it once). A
        firing may run up to an hour late (a busy process); the digest's windows allow that."""
        self.scheduler.add_job(
            _never_raises(run, "the daily digest"),
            trigger=trigger,
            id=DIGEST_JOB,
            name=DIGEST_JOB,
            replace_existing=True,
            misfire_grace_time=3600,
        )

    def run_digest_now(self, run: Callable[[], object]) -> None:
        """Run the digest once at start, for a firing the bot was down for (see
        ``bot.digest_schedule.missed_firing``)."""
        self.scheduler.add_job(
            _never_raises(run, "the daily digest (catching up)"),
            trigger="date",
            run_date=datetime.now(UTC),
            id=f"{DIGEST_JOB}-catch-up",
            name=f"{DIGEST_JOB}-catch-up",
            misfire_grace_time=None,
        )

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop ticking: the running tick finishes the row in hand and claims no more; wait for
        it up to ``timeout`` seconds (what is still held is taken up by another replica when the
        hold runs out)."""
        self.runner.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if not self.runner.idle.wait(timeout):
            log.warning("timers: a tick was still running at shutdown")


def _never_raises(call: Callable[[], object], what: str) -> Callable[[], None]:
    def job() -> None:
        try:
            call()
        except Exception:
            log.exception("%s failed", what)

    return job


class _NoSkippedTicks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("maximum number of running instances" in message and TICK_JOB in message)


_NO_SKIPPED_TICKS = _NoSkippedTicks()
