"""Who is issuing a request right now: a lock per request, held while it is issued and delivered.

Issuing takes several steps (a Vault token, the secret, the DM), and a process can die between
any two. Whoever finds the work half done must know whether its owner is still at it (leave it
alone) or gone (finish or undo it now, not after a timeout). A lock that dies with its owner
answers exactly that:

* PostgreSQL: a session-level advisory lock (``pg_advisory_lock(namespace, request_id)``) on a
  connection of its own for as long as it is held. PostgreSQL releases it when that connection
  ends, and a connection ends when its process dies (SIGKILL included), so a recoverer whose
  ``pg_try_advisory_lock`` succeeds knows the owner is gone, on any replica. The lock
  connections are pooled apart from the engine's (opening one cost a TCP and authentication
  round trip per approval): one goes back to the pool only once its lock is released, and one
  whose unlock failed is closed instead, which releases the lock.
* SQLite: the database belongs to one process, so a lock in memory is enough; at start nothing
  is held, and everything unfinished is orphaned.

Locks are re-entrant within a thread (the approval that completes a request holds its lock and
goes on to issue under it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from bot.store.db import LOCK_NOT_AVAILABLE, StoreUnavailable, report_unavailable

log = logging.getLogger(__name__)

# The first key of every issuing lock: an int4 of its own, so the locks cannot meet others.
NAMESPACE = int.from_bytes(hashlib.sha256(b"debug-access issuing").digest()[:4], "big", signed=True)


class _Held(threading.local):
    def __init__(self) -> None:
        self.counts: dict[int, int] = {}


class LocalLocks:
    """``bot.ports.WorkLocks`` in memory: one process owns the database (SQLite)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[int, threading.RLock] = {}

    def _lock(self, key: int) -> threading.RLock:
        with self._mutex:
            return self._locks.setdefault(key, threading.RLock())

    @contextmanager
    def hold(self, key: int, wait: timedelta | None = None) -> Iterator[bool]:
        lock = self._lock(key)
        got = lock.acquire(timeout=wait.total_seconds()) if wait else lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()


class PostgresLocks:
    """``bot.ports.WorkLocks`` on PostgreSQL session-level advisory locks, one connection each,
    from a pool of their own that only ever holds connections with no lock on them."""

    def __init__(self, engine: Engine, pool_size: int = 8) -> None:
        self._engine = report_unavailable(
            create_engine(
                engine.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=10,
                connect_args={"connect_timeout": 5},
            )
        )
        self._held = _Held()

    @contextmanager
    def hold(self, key: int, wait: timedelta | None = None) -> Iterator[bool]:
        counts = self._held.counts
        if counts.get(key):
            counts[key] += 1  # re-entered by the thread that holds it
            try:
                yield True
            finally:
                counts[key] -= 1
            return
        with self._engine.connect() as conn:
            try:
                got = self._acquire(conn, key, wait)
            except BaseException:
                conn.invalidate()  # it may hold the lock: never back into the pool
                raise
            if got:
                counts[key] = 1
            try:
                yield got
            finally:
                if got:
                    counts.pop(key, None)
                    try:
                        unlocked = conn.execute(
                            text("SELECT pg_advisory_unlock(:ns, :key)"),
                            {"ns": NAMESPACE, "key": key},
                        ).scalar()
                        conn.commit()
                    except (OperationalError, StoreUnavailable) as exc:
                        log.warning("could not unlock request %s: %s", key, exc)
                        unlocked = False
                    if not unlocked:  # never pool a connection that may still hold it:
                        conn.invalidate()  # closing it releases the lock

    @staticmethod
    def _acquire(conn: Connection, key: int, wait: timedelta | None) -> bool:
        params = {"ns": NAMESPACE, "key": key}
        if not wait:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:ns, :key)"), params).scalar()
            conn.commit()
            return bool(got)
        # LOCAL: the timeout ends with this transaction (the lock, session-level, does not), so
        # the pooled connection goes back without it.
        conn.execute(text(f"SET LOCAL lock_timeout = '{int(wait.total_seconds() * 1000)}ms'"))
        try:
            conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"), params)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
            conn.rollback()
            return False
        conn.commit()
        return True


def make_locks(engine: Engine) -> LocalLocks | PostgresLocks:
    """Advisory locks on PostgreSQL (any number of replicas), in-process ones elsewhere."""
    if engine.dialect.name == "postgresql":
        return PostgresLocks(engine)
    return LocalLocks()
