"""Timers for grant expiry and revocation retries (APScheduler 3, persistent job store).

Jobs live in the bot's own database (table ``apscheduler_jobs``) so they survive restarts, but
they are only timers: the grants table is the truth and ``AccessLifecycle.reconcile`` rebuilds
every timer at start. Several replicas may fire the same job; ``end_grant`` claims the grant
atomically, so the second run is a no-op.

APScheduler stores a job as a reference to an importable function plus its arguments, so the
jobs call the module-level ``run_end_grant`` which reaches the running lifecycle through
``bind``. A job that fires late (the bot was down) still runs: ``misfire_grace_time=None``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import Engine

from bot.digest import DailyDigest
from bot.lifecycle import AccessLifecycle, EndReason

log = logging.getLogger(__name__)

_lifecycle: AccessLifecycle | None = None
_digest: DailyDigest | None = None


def bind(lifecycle: AccessLifecycle, digest: DailyDigest | None = None) -> None:
    """Point scheduled jobs at the running lifecycle (and the daily digest)."""
    global _lifecycle, _digest
    _lifecycle, _digest = lifecycle, digest


def run_digest() -> None:
    """The cron job: post the daily digest (once per window, whatever the replica count)."""
    if _digest is None:
        log.error("digest timer fired before the digest was bound")
        return
    try:
        _digest.run()
    except Exception:
        log.exception("the daily digest failed")


def _run(what: str, call: Callable[[AccessLifecycle], object]) -> None:
    if _lifecycle is None:
        log.error("timer %s fired before the lifecycle was bound", what)
        return
    try:
        call(_lifecycle)
    except Exception:
        # Vault failures are recorded and retried inside the use case; anything else is a bug,
        # and reconcile at the next start finds the row again.
        log.exception("timer %s failed", what)


def run_end_grant(grant_id: int, reason: str) -> None:
    """The scheduled job: end (or retry ending) one grant."""
    _run(f"grant-{grant_id}", lambda lifecycle: lifecycle.end_grant(grant_id, reason))


def run_collect_check(grant_id: int) -> None:
    """The scheduled job: were the wrapped credentials unwrapped in time?"""
    _run(f"grant-{grant_id}-collect", lambda lifecycle: lifecycle.check_collected(grant_id))


def run_sweep() -> None:
    """Every minute: do whatever is overdue (a lost timer costs a minute, not a restart)."""
    _run("sweep", lambda lifecycle: lifecycle.sweep())


def run_escalation(request_id: int) -> None:
    """The scheduled job: nobody decided in time, ask the next approver tier."""
    _run(f"request-{request_id}-escalate", lambda lifecycle: lifecycle.escalate(request_id))


def run_pending_expiry(request_id: int) -> None:
    """The scheduled job: the request waited ``pending_ttl``; expire it if still pending."""
    _run(f"request-{request_id}-expire", lambda lifecycle: lifecycle.expire_pending(request_id))


class GrantTimers:
    """``bot.ports.Timers`` on APScheduler."""

    def __init__(self, engine: Engine) -> None:
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine)},
            executors={"default": ThreadPoolExecutor(max_workers=4)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone="UTC",
        )

    def start(self) -> None:
        self.scheduler.start()

    def shutdown(self, wait: bool = False) -> None:
        """Stop firing; with ``wait``, let a job that is running finish first (graceful stop)."""
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def schedule_end(self, grant_id: int, at: datetime) -> None:
        self._add(f"grant-{grant_id}-end", run_end_grant, [grant_id, EndReason.EXPIRED], at)

    def schedule_retry(self, grant_id: int, at: datetime) -> None:
        self._add(f"grant-{grant_id}-retry", run_end_grant, [grant_id, EndReason.EXPIRED], at)

    def schedule_escalation(self, request_id: int, at: datetime) -> None:
        self._add(f"request-{request_id}-escalate", run_escalation, [request_id], at)

    def schedule_pending_expiry(self, request_id: int, at: datetime) -> None:
        self._add(f"request-{request_id}-expire", run_pending_expiry, [request_id], at)

    def schedule_sweep(self, every: timedelta = timedelta(minutes=1)) -> None:
        self.scheduler.add_job(
            run_sweep,
            trigger="interval",
            seconds=every.total_seconds(),
            id="sweep",
            replace_existing=True,
            name="sweep",
        )

    def schedule_digest(self, trigger: BaseTrigger) -> None:
        self.scheduler.add_job(
            run_digest,
            trigger=trigger,
            id="daily-digest",
            replace_existing=True,
            name="daily-digest",
        )

    def schedule_collect_check(self, grant_id: int, at: datetime) -> None:
        self._add(f"grant-{grant_id}-collect", run_collect_check, [grant_id], at)

    def cancel_pending(self, request_id: int) -> None:
        for job_id in (f"request-{request_id}-escalate", f"request-{request_id}-expire"):
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(job_id)

    def _add(
        self, job_id: str, func: Callable[..., None], args: list[object], at: datetime
    ) -> None:
        self.scheduler.add_job(
            func,
            trigger="date",
            run_date=at,
            args=args,
            id=job_id,
            replace_existing=True,
            name=job_id,
        )
        log.info("timer %s set for %s", job_id, at.isoformat())
