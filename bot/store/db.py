"""Engine and transactions. One ``transaction()`` per use-case step: state changes and their
audit rows commit together or not at all.

A database that cannot be reached (down, restarting, refusing or dropping connections, timing
out) surfaces as ``StoreUnavailable`` wherever the engine is used: the Slack edge answers it with
"try again in a minute" in one place (``bot.slack.unavailable``) instead of every caller knowing
the driver's exception classes. The transaction it interrupted rolled back (or never began).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event, exc, text
from sqlalchemy.engine import ExceptionContext
from sqlmodel import Session, SQLModel, create_engine

from bot.store import models  # noqa: F401  (registers the tables)


class StoreUnavailable(Exception):
    """The database did not answer: nothing was changed, and the same step may be retried once
    it is back. Carries the driver's error class only (its message may quote SQL)."""


# PostgreSQL's SQLSTATE for "lock_timeout ran out": an OperationalError, but not an outage.
LOCK_NOT_AVAILABLE = "55P03"


def _unavailable(context: ExceptionContext) -> BaseException | None:
    """``handle_error`` hook: connection-level failures become ``StoreUnavailable``.

    PostgreSQL drivers raise the DB-API's ``OperationalError`` class for "not the statement's
    fault" (refused, reset, admin shutdown, timeouts); a lost connection is flagged
    ``is_disconnect`` whatever its class. SQLite raises ``OperationalError`` for syntax errors
    too, so there only a locked or unopenable file counts. The pool's pre-ping is left alone: it
    reconnects by itself when it sees a disconnect, and must see the original error to do so.
    """
    if context.is_pre_ping:
        return None
    if getattr(context.original_exception, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return None  # a lock_timeout ran out: the server answered (bot.store.locks waits so)
    error = context.sqlalchemy_exception
    transient = isinstance(error, exc.OperationalError)
    if transient and context.dialect.name == "sqlite":
        message = str(context.original_exception).lower()
        transient = any(m in message for m in ("locked", "unable to open", "disk i/o"))
    if context.is_disconnect or transient:
        kind = type(context.original_exception).__name__
        return StoreUnavailable(f"the database is unavailable ({kind})")
    return None


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets the settings a multi-threaded server needs."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return report_unavailable(engine)
    # A server that does not answer a connection attempt within seconds is down: fail, retry.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        # Slack listeners and their follow-ups, timer workers and Home publishers each hold at
        # most one connection at a time; room for all of them at once.
        pool_size=16,
        max_overflow=16,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )
    return report_unavailable(engine)


def report_unavailable(engine: Engine) -> Engine:
    """Make ``engine`` raise ``StoreUnavailable`` for connection-level failures (every engine
    of ours: the pool, and the lock connections of ``bot.store.locks``)."""
    event.listen(engine, "handle_error", _unavailable, retval=True)
    return engine


def create_schema(engine: Engine) -> None:
    """Create missing tables (idempotent)."""
    SQLModel.metadata.create_all(engine)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _lock_key(name: str) -> int:
    """A stable 32-bit key for ``name``, the same in every process and release."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big", signed=True)


# The first half of every two-part advisory lock key ``serialize`` takes (the schema lock is a
# one-part key, which PostgreSQL keeps apart from two-part ones).
_LOCK_SPACE = _lock_key("debug-access serialize")


def serialize(session: Session, name: str) -> None:
    """Wait for the lock called ``name`` and hold it until the session's transaction ends, so
    a check-then-insert done next cannot interleave with another one under the same name (in
    this process or another replica). Call it first in the transaction.

    PostgreSQL: a transaction-scoped advisory lock on ``name`` (other names do not wait).
    SQLite: the database's write lock, taken up front with ``BEGIN IMMEDIATE`` (SQLite has no
    finer lock; its writers queue anyway), so the check reads what the last writer committed.
    """
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": _LOCK_SPACE, "key": _lock_key(name)},
        )
    elif dialect == "sqlite":
        driver = connection.connection.driver_connection
        if driver is None or driver.in_transaction:
            raise RuntimeError("serialize() must be the first thing its transaction does")
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:  # pragma: no cover - make_engine serves these two
        raise RuntimeError(f"serialize() does not know how to lock on {dialect}")
