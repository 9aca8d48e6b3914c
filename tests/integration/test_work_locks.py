"""The request locks on PostgreSQL: held by one process, refused to every other, and gone the
moment their holder dies (SIGKILL included), which is how a recoverer knows work is orphaned."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.store.db import make_engine
from bot.store.locks import PostgresLocks, make_locks

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from bot.store.db import make_engine
from bot.store.locks import PostgresLocks
locks = PostgresLocks(make_engine(sys.argv[1]))
with locks.hold(42) as got:
    print("held" if got else "refused", flush=True)
    time.sleep(60)
"""


def test_a_lock_is_exclusive_reentrant_and_dies_with_its_process(bot_db_url: str) -> None:
    engine = make_engine(bot_db_url)
    locks = make_locks(engine)
    assert isinstance(locks, PostgresLocks)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, bot_db_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with locks.hold(42) as got:
            assert not got  # another process is issuing request 42
        with locks.hold(43) as got:
            assert got  # other requests are free
        holder.kill()
        holder.wait()
        killed = time.monotonic()
        while True:
            with locks.hold(42) as got:
                if got:
                    break
            assert time.monotonic() - killed < 5, "the lock outlived its holder"
            time.sleep(0.05)
        print(f"\n[figure] lock free {time.monotonic() - killed:.2f} s after SIGKILL")
    finally:
        holder.kill()
        engine.dispose()


def test_a_waiting_hold_gets_the_lock_once_it_is_released(bot_db_url: str) -> None:
    engine = make_engine(bot_db_url)
    locks = PostgresLocks(engine)
    holding, release = threading.Event(), threading.Event()

    def owner() -> None:
        with locks.hold(7) as got:
            assert got
            with locks.hold(7) as again:
                assert again  # re-entrant in the holding thread
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=owner)
    thread.start()
    holding.wait(5)
    with locks.hold(7, wait=timedelta(milliseconds=200)) as got:
        assert not got  # timed out
    threading.Timer(0.3, release.set).start()
    with locks.hold(7, wait=timedelta(seconds=5)) as got:
        assert got
    thread.join()
    engine.dispose()


def test_a_pooled_lock_connection_goes_back_with_no_lock_and_no_timeout(bot_db_url: str) -> None:
    """Lock connections are pooled (one connect per approval was measurable): the pool must
    only ever hold connections that hold no advisory lock and carry no lock_timeout; one whose
    unlock failed is closed, which releases its lock."""
    engine = make_engine(bot_db_url)
    locks = PostgresLocks(engine, pool_size=1)
    other = PostgresLocks(engine, pool_size=1)
    try:
        with locks.hold(50, wait=timedelta(seconds=1)) as got:
            assert got
        with locks._engine.connect() as conn:  # the same, pooled connection
            assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "0"
            held = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ).scalar()
            assert held == 0
        with other.hold(50) as got:
            assert got  # free for everyone else
        with locks.hold(51) as got:
            assert got
            # The lock vanishes under its holder (a PostgreSQL restart, an admin): the unlock
            # answers false, and the connection is closed rather than pooled.
            with other._engine.connect() as admin:
                admin.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = 51"
                )
                admin.commit()
        with locks.hold(51) as got:
            assert got  # a fresh connection, and the lock is free
    finally:
        engine.dispose()
