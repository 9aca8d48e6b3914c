"""Due rows, claimed by one replica at a time: the store's half of the timers.

Every due time the bot has is a column (a grant's ``expires_at``, a failed revocation's
``next_retry_at``, a request's ``pending_until``...). Each replica runs a short timer tick
(``bot.scheduler``) that asks for the rows due now and claims them one at a time:

* ``claim_next`` finds the oldest due row that nobody holds with ``SELECT … FOR UPDATE SKIP
  LOCKED`` (on PostgreSQL a replica passes over a row another is claiming at this instant
  instead of waiting for it), and holds it: ``next_attempt_at`` is set a little into the
  future, in the same transaction, so no other tick takes the row up while its work runs.
  SQLite has a single writer; there the guarded UPDATE (``rowcount == 1``) decides, as in
  ``bot.store.claims``.
* ``let_go`` gives the row back once its work ran: released if it is no longer due, else (the
  work failed, or could not finish) held until a retry time, so one broken row is retried
  later instead of at every tick. A replica that dies holding a row lets it go when the hold
  runs out.

The hold is the timers' own business: use cases never read or write ``next_attempt_at``. They
claim their rows themselves (``bot.store.claims``), which keeps their work exactly-once even if
a hold runs out while the work is still going.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Engine, Float, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import col, select

from bot.store.claims import claim
from bot.store.db import transaction
from bot.store.models import AccessRequest, Grant

Table = type[AccessRequest] | type[Grant]


def claim_next(
    engine: Engine,
    table: Table,
    due: ColumnElement[bool],
    oldest_first: Mapped[Any],
    now: datetime,
    hold_until: datetime,
) -> int | None:
    """Hold the oldest row of ``table`` that is ``due`` and free at ``now`` until
    ``hold_until``; return its id, or None when there is none (or another replica won it)."""
    free = _free(table, now)
    with transaction(engine) as session:
        key = session.exec(
            select(table.id)
            .where(due, free)
            .order_by(oldest_first, col(table.id))
            .limit(1)
            .with_for_update(skip_locked=True, of=table)
        ).first()
        if key is None or not claim(session, table, key, due, free, next_attempt_at=hold_until):
            return None
        return key


def let_go(
    engine: Engine,
    table: Table,
    key: int,
    held_until: datetime,
    still_due: ColumnElement[bool],
    retry_at: datetime,
) -> bool:
    """Give back row ``key`` held until ``held_until`` (only while that hold is still ours):
    released if it is no longer due, else held until ``retry_at``. Returns whether it was
    still due."""
    ours = col(table.next_attempt_at) == held_until
    with transaction(engine) as session:
        if claim(session, table, key, ours, still_due, next_attempt_at=retry_at):
            return True
        claim(session, table, key, ours, next_attempt_at=None)
        return False


def release(engine: Engine, table: Table, key: int, held_until: datetime) -> None:
    """Release row ``key`` at once, if the hold until ``held_until`` is still ours."""
    with transaction(engine) as session:
        claim(session, table, key, col(table.next_attempt_at) == held_until, next_attempt_at=None)


def _free(table: Table, now: datetime) -> ColumnElement[bool]:
    attempt = col(table.next_attempt_at)
    return or_(attempt.is_(None), attempt <= now)


class seconds_between(FunctionElement[float]):
    """``seconds_between(earlier, later)``: the seconds from one timestamp to another, in SQL
    (for due times computed from a column and the policy, such as the next escalation)."""

    type = Float()
    name = "seconds_between"
    inherit_cache = True


def at(moment: datetime) -> ColumnElement[datetime]:
    """A timestamp parameter for ``seconds_between``, typed so both dialects read it right."""
    return literal(moment, DateTime(timezone=True))


@compiles(seconds_between)
def _seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    earlier, later = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"
