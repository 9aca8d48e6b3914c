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

import logging
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from bot.lifecycle import AccessLifecycle, EndReason

log = logging.getLogger(__name__)

_lifecycle: AccessLifecycle | None = None


def bind(lifecycle: AccessLifecycle) -> None:
    """Point scheduled jobs at the running lifecycle."""
    global _lifecycle
    _lifecycle = lifecycle


def run_end_grant(grant_id: int, reason: str) -> None:
    """The scheduled job: end (or retry ending) one grant."""
    if _lifecycle is None:
        log.error("timer for grant %s fired before the lifecycle was bound", grant_id)
        return
    try:
        _lifecycle.end_grant(grant_id, reason)
    except Exception:
        # A failure here is already recorded and retried by end_grant; anything else is a bug,
        # and reconcile at the next start will find the grant again.
        log.exception("timer for grant %s failed", grant_id)


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

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def schedule_end(self, grant_id: int, at: datetime) -> None:
        self._add(f"grant-{grant_id}-end", grant_id, EndReason.EXPIRED, at)

    def schedule_retry(self, grant_id: int, at: datetime) -> None:
        self._add(f"grant-{grant_id}-retry", grant_id, EndReason.EXPIRED, at)

    def _add(self, job_id: str, grant_id: int, reason: str, at: datetime) -> None:
        self.scheduler.add_job(
            run_end_grant, trigger="date", run_date=at, args=[grant_id, reason], id=job_id,
            replace_existing=True, name=job_id,
        )
        log.info("timer %s set for %s", job_id, at.isoformat())
