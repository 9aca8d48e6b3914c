"""What the releases before database-driven timers left in the database besides our tables: the
rows of APScheduler's persistent job store (table ``apscheduler_jobs``), one job per grant and
per pending request plus the shared ``sweep``.

Written by APScheduler's own ``SQLAlchemyJobStore``, as those releases did, then pointed at the
functions those releases scheduled (``bot.scheduler:run_end_grant`` ...), which no longer exist:
this release never reads the table, so such rows must do no harm.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text

TABLE = "apscheduler_jobs"


def _placeholder(*args: object) -> None:
    """Stands for the last release's job functions while APScheduler writes the rows."""


def write_persisted_jobs(
    engine: Engine,
    end_grant_at: Mapping[int, datetime] | None = None,
    expire_request_at: Mapping[int, datetime] | None = None,
) -> list[str]:
    """Write the last release's jobs: ``grant-N-end`` for each grant, ``request-N-expire`` for
    each pending request, and ``sweep``. Returns the job ids, in the table's order."""
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)}, timezone="UTC"
    )
    scheduler.start(paused=True)
    functions = {}
    for grant_id, at in (end_grant_at or {}).items():
        job = f"grant-{grant_id}-end"
        scheduler.add_job(_placeholder, "date", run_date=at, args=[grant_id, "expired"], id=job)
        functions[job] = "bot.scheduler:run_end_grant"
    for request_id, at in (expire_request_at or {}).items():
        job = f"request-{request_id}-expire"
        scheduler.add_job(_placeholder, "date", run_date=at, args=[request_id], id=job)
        functions[job] = "bot.scheduler:run_pending_expiry"
    scheduler.add_job(
        _placeholder,
        "interval",
        seconds=60,
        id="sweep",
        next_run_time=datetime.now(UTC) + timedelta(minutes=1),
    )
    functions["sweep"] = "bot.scheduler:run_sweep"
    scheduler.shutdown(wait=False)
    with engine.begin() as conn:
        for job, function in functions.items():
            state = pickle.loads(
                conn.execute(
                    text(f"SELECT job_state FROM {TABLE} WHERE id = :id"), {"id": job}
                ).scalar_one()
            )
            state["func"] = function
            conn.execute(
                text(f"UPDATE {TABLE} SET job_state = :state WHERE id = :id"),
                {"state": pickle.dumps(state, pickle.HIGHEST_PROTOCOL), "id": job},
            )
        return [row[0] for row in conn.execute(text(f"SELECT id FROM {TABLE} ORDER BY id"))]
