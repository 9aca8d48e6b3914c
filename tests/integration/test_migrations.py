"""Migrations on PostgreSQL: head is what create_all makes, replicas starting together
migrate once, and a database filled by the last release before migrations is upgraded with its
audit trail, grants and timers intact.

The upgrade test runs *that release itself* (commit ``RELEASE``, taken from git history) as a
real bot process against real OpenBao and PostgreSQL, then upgrades its database with this
checkout and lets this checkout's bot carry on.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import SQLModel

from bot.slack.ids import ActionId
from bot.store import schema
from bot.store.db import make_engine
from tests.emulators.slack_api import SlackEmulator
from tests.integration.flows import (
    ALICE,
    BOB,
    REQUESTER,
    approval_message,
    audit_actions,
    bot_rows,
    click,
    credentials_message,
    lease_gone,
    legacy_policy_for,
    pg_login_and_select,
    request_access,
    request_status,
    unwrap_from,
    wait_until,
)
from tests.integration.services import BotProcess, OpenBaoServer, PostgresServer, VaultDatabase
from tests.unit.last_release import cut_to_baseline

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RELEASE = "9096f83"  # the last commit of the release before migrations (create_all only)


@pytest.fixture
def engine(bot_db_url: str) -> Iterator[Engine]:
    made = make_engine(bot_db_url)
    yield made
    made.dispose()


def catalog(postgres: PostgresServer, dbname: str) -> dict[str, set[tuple[Any, ...]]]:
    """What PostgreSQL itself records about our tables, Alembic's own table left out."""
    queries = {
        "columns": "SELECT table_name, column_name, ordinal_position, data_type, "
        "character_maximum_length, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = 'public'",
        "constraints": "SELECT conrelid::regclass::text, conname, contype, "
        "pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace = 'public'::regnamespace",
        "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname = 'public'",
        "sequences": "SELECT sequence_name, data_type, start_value, increment "
        "FROM information_schema.sequences WHERE sequence_schema = 'public'",
    }
    return {
        kind: {
            row for row in postgres.execute(query, dbname=dbname) if "alembic_version" not in row[0]
        }
        for kind, query in queries.items()
    }


def test_head_is_what_create_all_makes_on_postgresql(
    postgres: PostgresServer,
    bot_db_url: str,
    engine: Engine,
) -> None:
    """Columns in order with types and defaults, constraints with the names PostgreSQL gave
    them, index definitions (the partial unique one too) and sequences: all identical."""
    other = "create_all_" + bot_db_url.rsplit("_", 1)[-1]
    postgres.create_database(other)
    by_create_all = make_engine(postgres.sqlalchemy_url(other))
    try:
        SQLModel.metadata.create_all(by_create_all)
        assert schema.upgrade(engine) == schema.head()
        made = catalog(postgres, bot_db_url.rsplit("/", 1)[-1])
        assert {k: len(v) for k, v in made.items()} == {
            # 0005 (user_lock, notice.kind): +10 columns, +1 constraint, +2 indexes, +1 sequence;
            # 0006 (passkey_credential, step_up_link): +17, +5, +6, +2;
            # 0007 (notice.given_up_at), 0008 (step_up_link.refusals): +1 column each.
            "columns": 112,
            "constraints": 26,
            "indexes": 37,
            "sequences": 10,
        }
        assert any(
            "WHERE (((status)::text = 'pending'::text) AND (parent_id IS NOT NULL))" in row[2]
            for row in made["indexes"]
        )
        assert any(
            row[1] == "ux_one_standing_lock"
            and row[2].startswith("CREATE UNIQUE INDEX")
            and row[2].endswith("WHERE (lifted_at IS NULL)")
            for row in made["indexes"]
        )
        assert catalog(postgres, other) == made
        with engine.connect() as conn:
            assert schema.differences(conn) == []
    finally:
        by_create_all.dispose()
        postgres.drop_database(other)


def test_replicas_starting_together_migrate_once(
    postgres: PostgresServer,
    bot_db_url: str,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While someone holds the schema lock both replicas wait on it; once it is free, one
    creates the schema and the other finds it at head."""
    caplog.set_level("INFO", logger="bot.store.schema")
    replicas = [make_engine(bot_db_url) for _ in range(2)]
    results: list[object] = []
    dbname = bot_db_url.rsplit("/", 1)[-1]

    def start(replica: Engine) -> None:
        try:
            results.append(schema.upgrade(replica))
        except Exception as exc:  # recorded, so an unexpected error shows in the assert
            results.append(exc)

    holder = postgres.connect(dbname)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (schema.LOCK_KEY,))
        threads = [threading.Thread(target=start, args=(r,)) for r in replicas]
        for thread in threads:
            thread.start()
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            f"AND database = (SELECT oid FROM pg_database WHERE datname = '{dbname}')"
        )
        wait_until(lambda: postgres.execute(waiting)[0][0] == 2, what="both replicas to wait")
        assert results == []
    finally:
        holder.execute("SELECT pg_advisory_unlock(%s)", (schema.LOCK_KEY,))
        holder.close()
    for thread in threads:
        thread.join(timeout=60)
    for replica in replicas:
        replica.dispose()
    assert results == [schema.head(), schema.head()]
    assert [r.getMessage() for r in caplog.records if r.name == "bot.store.schema"] == [
        f"database schema: created at {schema.head()}"
    ]
    assert schema.current(engine) == schema.head()
    assert bot_rows_count(postgres, dbname, "alembic_version") == 1


def bot_rows_count(postgres: PostgresServer, dbname: str, table: str) -> int:
    return int(postgres.execute(f'SELECT count(*) FROM "{table}"', dbname=dbname)[0][0])


# -- the upgrade of a database made by the last release -----------------------------------------


def release_checkout(directory: Path) -> Path:
    """The ``bot`` package as the last release shipped it, extracted from git history."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", RELEASE, "bot"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"the upgrade test runs release {RELEASE} from git history, which is not "
            f"available here ({archive.stderr.decode().strip()}); use a full clone "
            "(git fetch --unshallow)"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def imported_bot_package(env: dict[str, str]) -> tuple[str, bool]:
    """Where ``python -m bot`` in this environment imports ``bot`` from; whether it migrates."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, bot; "
            "print(bot.__file__); print(importlib.util.find_spec('bot.store.schema') is not None)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    path, has_schema = probe.stdout.split()
    return path, has_schema == "True"


def all_rows(postgres: PostgresServer, dbname: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order (Alembic's own table left out)."""
    tables = [
        r[0]
        for r in postgres.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename != 'alembic_version' ORDER BY tablename",
            dbname=dbname,
        )
    ]
    return {
        table: [
            tuple(r) for r in postgres.execute(f'SELECT * FROM "{table}" ORDER BY 1', dbname=dbname)
        ]
        for table in tables
    }


def audit_verify(bot: BotProcess) -> subprocess.CompletedProcess[str]:
    """``debug-access audit verify`` from this checkout, against the bot's database."""
    env = {**bot.env, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "bot", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=bot.workdir,
    )


def approve(bot: BotProcess, slack: SlackEmulator, text: str) -> int:
    request_id = request_access(bot, slack, REQUESTER, text)
    click(bot, slack, ALICE, approval_message(slack, request_id), ActionId.APPROVE)
    return request_id


@pytest.mark.slow
def test_a_database_filled_by_the_last_release_is_upgraded_and_nothing_is_lost(
    run_bot,
    slack: SlackEmulator,
    openbao: OpenBaoServer,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    bot_db_url: str,
    tmp_path: Path,
) -> None:
    # 1. The last release, as it ran in production: its own code, create_all at start.
    release = release_checkout(tmp_path / "release")
    # The last release reads only the legacy grant keys; the new bot reads the same file.
    policy = legacy_policy_for(vault_db.path)
    old = run_bot(policy, env={"PYTHONPATH": str(release)})
    package, migrates = imported_bot_package(old.env)
    assert package == str(release / "bot" / "__init__.py") and not migrates

    # 2. Fill it through real flows: ended, denied, pending, long-lived and short-lived grants.
    ended = approve(old, slack, "payments-db 30m INC-70 revoked early")
    click(old, slack, REQUESTER, credentials_message(slack, REQUESTER, ended), ActionId.REVOKE)
    wait_until(lambda: request_status(postgres, old, ended) == "ended", what="revocation")
    denied = request_access(old, slack, REQUESTER, "payments-db 1h INC-71 denied")
    click(old, slack, BOB, approval_message(slack, denied), ActionId.DENY)
    pending = request_access(old, slack, REQUESTER, "payments-db 1h INC-72 still pending")
    long_lived = approve(old, slack, "payments-db 2h INC-73 outlives the upgrade")
    long_creds = unwrap_from(credentials_message(slack, REQUESTER, long_lived), openbao)
    # Last, so that it expires after the upgrade, in the new bot's hands.
    short = approve(old, slack, "payments-db 1m INC-74 expires after the upgrade")
    issued = time.monotonic()
    short_creds = unwrap_from(credentials_message(slack, REQUESTER, short), openbao)
    assert pg_login_and_select(postgres, short_creds["username"], short_creds["password"]) == 3
    assert old.stop() == 0

    dbname = bot_db_url.rsplit("/", 1)[-1]
    before = all_rows(postgres, dbname)
    counts = {table: len(rows) for table, rows in before.items()}
    assert counts == {
        "access_request": 5,
        "apscheduler_jobs": 8,
        "audit_event": 16,
        "audit_head": 1,
        "decision": 4,
        "digest_run": 0,
        "grant": 3,
        "request_message": counts["request_message"],
    }, counts
    assert counts["request_message"] > 0
    assert [
        r[0] for r in bot_rows(postgres, old, "SELECT id FROM apscheduler_jobs ORDER BY id")
    ] == [
        "grant-1-collect",
        "grant-1-end",  # revoked early: these find nothing to do
        "grant-2-collect",
        "grant-2-end",
        "grant-3-collect",
        "grant-3-end",
        f"request-{pending}-expire",
        "sweep",
    ]
    assert [
        (r[0], r[1])
        for r in bot_rows(postgres, old, "SELECT id, status FROM access_request ORDER BY id")
    ] == [
        (ended, "ended"),
        (denied, "denied"),
        (pending, "pending"),
        (long_lived, "active"),
        (short, "active"),
    ]
    assert schema.current(make_engine(bot_db_url)) is None

    # 3. Upgrade it with this checkout.
    engine = make_engine(bot_db_url)
    started = time.monotonic()
    assert schema.upgrade(engine) == schema.head()
    took = time.monotonic() - started
    print(f"upgrade of the release database took {took:.3f}s")

    # 4. Nothing lost, nothing changed; the chain verifies; the schema is the models'.
    assert cut_to_baseline(all_rows(postgres, dbname)) == before
    assert postgres.execute("SELECT version_num FROM alembic_version", dbname=dbname) == [
        (schema.head(),)
    ]
    with engine.connect() as conn:
        assert schema.differences(conn) == []
    engine.dispose()
    verified = audit_verify(old)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "audit chain intact: 16 events" in verified.stdout

    # 5. This checkout's bot carries on: the 1-minute grant is revoked on time.
    new = run_bot(policy)
    assert imported_bot_package(new.env)[1]
    wait_until(
        lambda: request_status(postgres, new, short) == "ended",
        timeout=90,
        what="the short grant to expire",
    )
    held = time.monotonic() - issued
    assert 50 < held < 80, f"ended after {held:.0f}s, expected about 60s"
    assert audit_actions(postgres, new, short)[-1] == "expired"
    assert not postgres.role_exists(short_creds["username"])
    short_lease = bot_rows(
        postgres, new, f'SELECT lease_id FROM "grant" WHERE request_id = {short}'
    )[0][0]
    assert lease_gone(openbao, str(short_lease))
    # The long grant is untouched and still works; the pending request still waits.
    assert request_status(postgres, new, long_lived) == "active"
    assert pg_login_and_select(postgres, long_creds["username"], long_creds["password"]) == 3
    assert request_status(postgres, new, pending) == "pending"

    after = all_rows(postgres, dbname)
    # The last release's jobs are not ours: never read, never touched, and they did no harm.
    assert after["apscheduler_jobs"] == before["apscheduler_jobs"]
    assert after["audit_event"][:16] == before["audit_event"]
    assert all(
        len(after[table]) >= count for table, count in counts.items() if table != "apscheduler_jobs"
    )
    verified = audit_verify(new)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"audit chain intact: {len(after['audit_event'])} events" in verified.stdout
    assert len(after["audit_event"]) > 16
    assert postgres.execute("SELECT version_num FROM alembic_version", dbname=dbname) == [
        (schema.head(),)
    ]


def test_the_new_bot_upgrades_a_release_database_at_start(
    run_bot,
    slack: SlackEmulator,
    postgres: PostgresServer,
    vault_db: VaultDatabase,
    bot_db_url: str,
    tmp_path: Path,
) -> None:
    release = release_checkout(tmp_path / "release")
    # The last release reads only the legacy grant keys; the new bot reads the same file.
    policy = legacy_policy_for(vault_db.path)
    old = run_bot(policy, env={"PYTHONPATH": str(release)})
    request_id = approve(old, slack, "payments-db 2h INC-75 across the upgrade")
    credentials_message(slack, REQUESTER, request_id)
    old.stop()
    dbname = bot_db_url.rsplit("/", 1)[-1]
    before = all_rows(postgres, dbname)

    new = run_bot(policy)

    assert postgres.execute("SELECT version_num FROM alembic_version", dbname=dbname) == [
        (schema.head(),)
    ]
    after = cut_to_baseline(all_rows(postgres, dbname))
    assert {t: after[t] for t in before if t != "apscheduler_jobs"} == {
        t: rows for t, rows in before.items() if t != "apscheduler_jobs"
    }
    assert request_status(postgres, new, request_id) == "active"
