"""Alembic owns the schema: the baseline is what ``create_all`` made, every model change needs a
revision, and a database made before migrations is recognised, stamped and kept, rows and all.

SQLite files only (no services); ``tests/integration/test_migrations.py`` does the same on
PostgreSQL and upgrades a database filled by the previous release itself.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session, SQLModel

from bot.audit import verify_chain
from bot.domain.requests import ValidRequest
from bot.store import schema
from bot.store.db import make_engine
from tests.unit.fakes import APPROVER, OTHER_APPROVER, REQUESTER, Harness, make_lifecycle
from tests.unit.last_release import cut_to_baseline, write_persisted_jobs

OUR_TABLES = {
    "access_request",
    "audit_event",
    "audit_head",
    "decision",
    "digest_run",
    "grant",
    "notice",
    "passkey_credential",
    "request_message",
    "ssh_public_key",
    "step_up_link",
    "user_lock",
}


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A file-backed SQLite database made the way the bot makes it (WAL, foreign keys on)."""
    made = make_engine(f"sqlite:///{tmp_path / 'bot.db'}")
    yield made
    made.dispose()


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def sqlite_schema(engine: Engine) -> set[tuple[Any, ...]]:
    """Every table, index and its DDL as SQLite stores it, except Alembic's own table.

    Whitespace is collapsed: ``ALTER TABLE … ADD COLUMN`` splices the column into the stored
    text without create_all's line breaks, and a batch copy (a downgrade) quotes the table's
    name; neither changes what the DDL means. Everything else must match.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE tbl_name != 'alembic_version'"
            )
        ).all()
    return {
        (kind, name, table, " ".join(sql.replace('"', "").split()) if sql else sql)
        for kind, name, table, sql in rows
    }


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (APScheduler's included), in primary-key order."""
    with engine.connect() as conn:
        return {
            table: [
                tuple(r) for r in conn.execute(text(f'SELECT * FROM "{table}" ORDER BY 1')).all()
            ]
            for table in sorted(tables(engine) - {schema.VERSION_TABLE})
        }


def fill_like_the_last_release(engine: Engine) -> Harness:
    """Requests (approved, denied, pending, ended), decisions, grants, audit events and
    scheduled jobs, written by the real use cases and the real APScheduler job store."""
    h = make_lifecycle(engine=engine)
    hour = timedelta(hours=1)
    for number in range(4):
        valid = ValidRequest("payments-db", hour, f"INC-{number} x")
        request = h.lifecycle.submit(REQUESTER, valid, "C0ORIGIN").view.id
        if number == 0:
            h.lifecycle.decide(request, APPROVER, approve=True)
        elif number == 1:
            h.lifecycle.decide(request, OTHER_APPROVER, approve=False)
        elif number == 2:
            h.lifecycle.decide(request, APPROVER, approve=True)
            h.lifecycle.revoke_early(request, REQUESTER)
    write_persisted_jobs(engine, end_grant_at={1: datetime.now(UTC) + timedelta(days=1)})
    return h


def make_like_the_last_release(engine: Engine, *, filled: bool = False) -> Harness | None:
    """A database shaped exactly as the releases before migrations made it, with no
    ``alembic_version``: the baseline's tables (which ``create_all`` made, proven on PostgreSQL
    against the release itself), optionally filled by today's use cases and then taken back to
    the baseline by the real downgrade, which keeps every row the baseline has columns for."""
    harness = None
    if filled:
        schema.upgrade(engine)
        harness = fill_like_the_last_release(engine)
        schema.downgrade(engine, schema.BASELINE)
    else:
        with engine.begin() as conn:
            command.upgrade(schema.alembic_config(conn), schema.BASELINE)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {schema.VERSION_TABLE}")
    return harness


def audit_chain_ok(engine: Engine) -> tuple[bool, int]:
    with Session(engine) as session:
        report = verify_chain(session)
    return report.ok, report.checked


# -- fresh databases ----------------------------------------------------------------------------


def test_head_follows_the_baseline_and_an_empty_database_has_no_revision(engine: Engine) -> None:
    assert (schema.BASELINE, schema.head()) == ("0001", "0008")
    assert schema.current(engine) is None


def test_an_empty_database_is_created_at_head(engine: Engine) -> None:
    assert schema.upgrade(engine) == schema.head()
    assert schema.current(engine) == schema.head()
    assert tables(engine) == OUR_TABLES | {schema.VERSION_TABLE}


def test_upgrading_at_head_changes_nothing(engine: Engine) -> None:
    schema.upgrade(engine)
    before = sqlite_schema(engine)
    assert schema.upgrade(engine) == schema.head()
    assert sqlite_schema(engine) == before


def test_the_models_need_no_revision_that_is_not_written_yet(engine: Engine) -> None:
    """The guard for every later model change: upgrade to head, then compare with the models.

    If this fails, a model changed without a revision: write one (see bot/store/schema.py).
    """
    schema.upgrade(engine)
    with engine.connect() as conn:
        assert schema.differences(conn) == []


def test_head_is_exactly_what_create_all_makes(tmp_path: Path) -> None:
    """Byte for byte: the DDL SQLite stores for every table and index is the same."""
    by_create_all = make_engine(f"sqlite:///{tmp_path / 'create_all.db'}")
    by_alembic = make_engine(f"sqlite:///{tmp_path / 'alembic.db'}")
    SQLModel.metadata.create_all(by_create_all)
    schema.upgrade(by_alembic)
    made = sqlite_schema(by_alembic)
    tables = SQLModel.metadata.tables.values()
    # Every table and every index, the partial unique ones included.
    assert {row[1] for row in made if row[0] == "table"} == {table.name for table in tables}
    assert {row[1] for row in made if row[0] == "index"} >= {
        index.name for table in tables for index in table.indexes
    }
    assert any("WHERE status = 'pending' AND parent_id IS NOT NULL" in str(row[3]) for row in made)
    assert any("WHERE lifted_at IS NULL" in str(row[3]) for row in made)
    assert sqlite_schema(by_create_all) == made


def test_every_revision_downgrades_to_exactly_what_it_upgraded_from(tmp_path: Path) -> None:
    """Rolling a release back: head, down to the baseline, gives the baseline's own DDL."""
    baseline = make_engine(f"sqlite:///{tmp_path / 'baseline.db'}")
    round_trip = make_engine(f"sqlite:///{tmp_path / 'round_trip.db'}")
    with baseline.begin() as conn:
        command.upgrade(schema.alembic_config(conn), schema.BASELINE)
    schema.upgrade(round_trip)
    assert schema.downgrade(round_trip, schema.BASELINE) == schema.BASELINE
    assert schema.current(round_trip) == schema.BASELINE
    assert sqlite_schema(round_trip) == sqlite_schema(baseline)
    assert schema.upgrade(round_trip) == schema.head()


def test_a_downgrade_to_an_unknown_revision_is_refused(engine: Engine) -> None:
    schema.upgrade(engine)
    with pytest.raises(schema.SchemaProblem, match="'0042', which this release does not know"):
        schema.downgrade(engine, "0042")
    assert schema.current(engine) == schema.head()


def test_the_upgrade_leaves_foreign_keys_enforced(engine: Engine) -> None:
    schema.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


# -- databases made before migrations --------------------------------------------------------------


def test_a_create_all_database_is_stamped_and_keeps_every_row(engine: Engine) -> None:
    h = make_like_the_last_release(engine, filled=True)
    assert h is not None
    before = dump(engine)
    assert {t: len(r) for t, r in before.items()} == {
        "access_request": 4,
        "apscheduler_jobs": 2,
        "audit_event": 12,
        "audit_head": 1,
        "decision": 3,
        "digest_run": 0,
        "grant": 2,
        "request_message": 18,
    }
    assert audit_chain_ok(engine) == (True, 12)

    assert schema.current(engine) is None
    assert schema.upgrade(engine) == schema.head()

    assert schema.current(engine) == schema.head()
    assert cut_to_baseline(dump(engine)) == before
    assert audit_chain_ok(engine) == (True, 12)
    with engine.connect() as conn:
        assert schema.differences(conn) == []
    # And the bot carries on where it stopped: new rows extend the same chain.
    request = h.lifecycle.submit(
        REQUESTER, ValidRequest("payments-db", timedelta(hours=1), "INC-9 after"), None
    ).view.id
    h.lifecycle.decide(request, APPROVER, approve=True)
    assert audit_chain_ok(engine) == (True, 16)  # requested, approved, issued, delivered


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("DROP TABLE digest_run", "missing table digest_run"),
        ('ALTER TABLE "grant" ADD COLUMN note TEXT', "unexpected column grant.note (null)"),
        (
            "ALTER TABLE access_request DROP COLUMN pending_until",
            "missing column access_request.pending_until (null)",
        ),
        (
            "DROP INDEX ux_one_pending_extension",
            "missing unique index ux_one_pending_extension on access_request(parent_id)",
        ),
    ],
)
def test_tables_that_are_not_the_baseline_are_refused_not_stamped(
    engine: Engine,
    damage: str,
    named: str,
) -> None:
    """Stamping them would run every later revision against the wrong tables: refuse, and
    say what differs, in one line, leaving the database as it was."""
    make_like_the_last_release(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(damage)
    before = sqlite_schema(engine)
    with pytest.raises(schema.SchemaProblem) as refused:
        schema.upgrade(engine)
    message = str(refused.value)
    assert "\n" not in message
    assert "no alembic_version" in message and named in message
    assert schema.current(engine) is None
    assert sqlite_schema(engine) == before


def test_tables_we_do_not_own_are_left_alone(engine: Engine) -> None:
    """APScheduler's job table, or anything else sharing the database, is not ours: a database
    holding only such tables counts as empty, gets our tables at head, and keeps theirs."""
    write_persisted_jobs(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY, note TEXT)")
        conn.exec_driver_sql("INSERT INTO someone_elses VALUES (1, 'keep me')")
    before = dump(engine)

    assert schema.upgrade(engine) == schema.head()

    after = dump(engine)
    assert {t: after[t] for t in before} == before
    assert set(after) == set(before) | OUR_TABLES
    with engine.connect() as conn:
        # Alembic would drop the stranger (it is in no model) but never APScheduler's table.
        assert [(d[0], d[1].name) for d in schema.differences(conn)] == [
            ("remove_table", "someone_elses")
        ]


def test_a_database_from_a_newer_release_is_refused(engine: Engine) -> None:
    schema.upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0042'")
    with pytest.raises(schema.SchemaProblem, match="'0042', which this release does not know"):
        schema.upgrade(engine)
    assert schema.current(engine) == "0042"


# -- atomic and serialised ---------------------------------------------------------------------


FAILING_REVISION = """\
import sqlalchemy as sa
from alembic import op

revision = "0099"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grant") as batch:
        batch.add_column(sa.Column("half_done", sa.Integer(), nullable=True))
    op.execute("UPDATE audit_event SET actor = 'nobody'")
    raise RuntimeError("the revision fails halfway")


def downgrade() -> None:
    pass
"""


def test_a_revision_that_fails_halfway_changes_nothing(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SQLite too runs the whole upgrade in one transaction: the audit trail is never left
    half migrated (batch mode copies tables, and a copy interrupted halfway loses rows)."""
    make_like_the_last_release(engine, filled=True)
    before, before_schema = dump(engine), sqlite_schema(engine)
    migrations = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, migrations)
    failing = FAILING_REVISION.replace("{head}", schema.head())
    (migrations / "versions" / "0099_fails.py").write_text(failing)
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    assert schema.head() == "0099"

    with pytest.raises(RuntimeError, match="fails halfway"):
        schema.upgrade(engine)

    assert schema.current(engine) is None  # not even the stamp survived
    assert dump(engine) == before
    assert sqlite_schema(engine) == before_schema
    assert audit_chain_ok(engine) == (True, 12)


def test_concurrent_upgrades_of_one_file_both_succeed(engine: Engine) -> None:
    """Two processes' worth of engines on one file: BEGIN IMMEDIATE makes the second wait."""
    other = make_engine(str(engine.url))
    barrier = threading.Barrier(2)
    results: list[object] = []

    def run(target: Engine) -> None:
        barrier.wait()
        try:
            results.append(schema.upgrade(target))
        except Exception as exc:  # recorded, so an unexpected error shows in the assert
            results.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in (engine, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    other.dispose()
    assert results == [schema.head(), schema.head()]
    assert tables(engine) == OUR_TABLES | {schema.VERSION_TABLE}


def test_notices_queued_before_0005_upgrade_as_direct_messages(engine: Engine) -> None:
    """0005 gives every notice a kind: one queued by the release before (an undelivered DM)
    must still be sent as the DM it was."""
    with engine.begin() as conn:
        command.upgrade(schema.alembic_config(conn), "0004")
        conn.execute(
            text(
                "INSERT INTO notice (user, text, created_at, next_attempt_at, attempts) "
                "VALUES ('U0CAROL', 'your access could not be delivered', :at, :at, 2)"
            ),
            {"at": datetime(2026, 12, 1, tzinfo=UTC)},
        )
    assert schema.upgrade(engine) == schema.head()
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT user, text, attempts, kind FROM notice")).all()
    assert [tuple(r) for r in rows] == [("U0CAROL", "your access could not be delivered", 2, "dm")]
