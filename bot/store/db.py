"""Engine and transactions. One ``transaction()`` per use-case step: state changes and their
audit rows commit together or not at all.

A database that cannot be reached (down, restarting, refusing or dropping connections, timing
out) surfaces as ``StoreUnavailable`` wherever the engine is used: the Slack edge answers it with
"try again in a minute" in one place (``bot.slack.unavailable``) instead of every caller knowing
the driver's exception classes. The transaction it interrupted rolled back (or never began).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, event, exc
from sqlalchemy.engine import ExceptionContext
from sqlmodel import Session, SQLModel, create_engine

from bot.store import models  # noqa: F401  (registers the tables)


class StoreUnavailable(Exception):
    """The database did not answer: nothing was changed, and the same step may be retried once
    it is back. Carries the driver's error class only (its message may quote SQL)."""


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

        event.listen(engine, "handle_error", _unavailable, retval=True)
        return engine
    # A server that does not answer a connection attempt within seconds is down: fail, retry.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        pool_timeout=10,
        connect_args={"connect_timeout": 5},
    )
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
