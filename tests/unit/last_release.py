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

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
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
    # The job store alone, as the scheduler would use it: no scheduler thread that might run
    # (and remove) a job whose time has passed while the rows are written.
    scheduler = BackgroundScheduler(timezone="UTC")
    store = SQLAlchemyJobStore(engine=engine)
    store.start(scheduler, "default")
    functions = {}

    def add(job_id: str, trigger: BaseTrigger, args: list[object], first: datetime) -> None:
        store.add_job(
            Job(
                scheduler,
                id=job_id,
                name=job_id,
                func=_placeholder,
                args=args,
                kwargs={},
                trigger=trigger,
                executor="default",
                misfire_grace_time=None,
                coalesce=True,
                max_instances=1,
                next_run_time=first,
            )
        )

    for grant_id, at in (end_grant_at or {}).items():
        add(f"grant-{grant_id}-end", DateTrigger(at), [grant_id, "expired"], at)
        functions[f"grant-{grant_id}-end"] = "bot.scheduler:run_end_grant"
    for request_id, at in (expire_request_at or {}).items():
        add(f"request-{request_id}-expire", DateTrigger(at), [request_id], at)
        functions[f"request-{request_id}-expire"] = "bot.scheduler:run_pending_expiry"
    soon = datetime.now(UTC) + timedelta(minutes=1)
    add("sweep", IntervalTrigger(seconds=60, start_date=soon), [], soon)
    functions["sweep"] = "bot.scheduler:run_sweep"
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


#: Tables the migrations after the baseline create; a database the last release filled has
#: them empty after the upgrade.
TABLES_ADDED_SINCE_BASELINE = (
    "ssh_public_key",
    "notice",
    "user_lock",
    "passkey_credential",
    "step_up_link",
)
#: Columns the migrations after the baseline add at the end of a table (0002: one, 0004: two on
#: ``access_request``; 0004: one on ``grant``), empty for every row written before.
COLUMNS_ADDED_SINCE_BASELINE = (("access_request", 3), ("grant", 1))


def cut_to_baseline(rows: Mapping[str, list[tuple[object, ...]]]) -> dict[str, list[object]]:
    """A dump at head, cut to the baseline's tables and columns, after checking that what the
    later revisions added is empty for the rows written before them."""
    for table in TABLES_ADDED_SINCE_BASELINE:
        assert list(rows.get(table, [])) == [], table
    kept: dict[str, list[object]] = {
        t: list(r) for t, r in rows.items() if t not in TABLES_ADDED_SINCE_BASELINE
    }
    for table, added in COLUMNS_ADDED_SINCE_BASELINE:
        assert all(row[-added:] == (None,) * added for row in rows[table]), table
        kept[table] = [row[:-added] for row in rows[table]]
    return kept
