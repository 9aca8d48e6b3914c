"""The database schema, owned by Alembic: create, recognise, stamp and upgrade it.

Why migrations: the audit trail must survive every release, so a schema change can never mean
"start with a fresh database". Every change to ``bot/store/models.py`` comes with a revision in
``bot/store/migrations/versions/`` (``tests/unit/test_migrations.py`` fails until it does).

Three kinds of database reach ``upgrade``:

* one Alembic already manages (it has an ``alembic_version`` row): upgraded to head;
* an empty one, or one holding only tables we do not own (APScheduler's ``apscheduler_jobs``,
  or anything else sharing the schema): our tables are created by the revisions, up to head,
  so a fresh install needs no extra command;
* one made by the releases before migrations, with ``SQLModel.metadata.create_all``: it has our
  tables but no ``alembic_version``. If its tables are exactly what the baseline revision makes
  it is stamped at the baseline and then upgraded; anything else (some of our tables missing, a
  column too many or too few) stops with a one-line ``SchemaProblem``, because stamping a
  schema that is not the baseline would make every later revision run against the wrong tables.

Several replicas may start at once. On PostgreSQL the whole upgrade runs in one transaction
(PostgreSQL's DDL is transactional) under ``pg_advisory_xact_lock``: the first replica
migrates, the others wait on the lock and then find the database at head. On SQLite there is a
single writer anyway; ``BEGIN IMMEDIATE`` takes the write lock up front, so the upgrade is
atomic too (SQLite's DDL is transactional, only Python's driver hides it) and a second process
waits for the first.

To write a revision after changing the models (from a database at head)::

    from alembic import command
    from bot.store import schema
    with engine.connect() as conn:
        command.revision(schema.alembic_config(conn), message="...", autogenerate=True,
                         rev_id="0002")

then read and clean up what it wrote; in particular, name new constraints explicitly.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel

from bot.errors import ConfigProblem
from bot.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().with_name("migrations")
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
APSCHEDULER_TABLE = "apscheduler_jobs"
# Tables in our database that the revisions must never create, alter or drop.
NOT_OURS = frozenset({APSCHEDULER_TABLE, VERSION_TABLE})
# One advisory-lock key for "the bot's schema", the same in every replica and release.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"debug-access schema").digest()[:8], "big", signed=True)


class SchemaProblem(ConfigProblem):
    """The database cannot be migrated safely as it is; the message says why, in one line."""


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Alembic's filter: leave APScheduler's job table and Alembic's own table alone."""
    return not (type_ == "table" and name in NOT_OURS)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the migrations shipped inside this package (no .ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this release knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the baseline ships with the package
        raise SchemaProblem(f"no migrations found in {MIGRATIONS}")
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at; None when Alembic does not manage it (yet)."""
    with engine.connect() as conn:
        return _version(conn)


def require_head(engine: Engine) -> None:
    """Refuse (one line, naming the command) unless the database is at this release's head.

    For the commands that only read or post (``audit``, ``digest``): they must not migrate a
    database behind the operator's back, nor read one whose shape they do not know.
    """
    at, wanted = current(engine), head()
    if at != wanted:
        raise SchemaProblem(
            f"the database schema is at {at or 'no revision'} but this release "
            f"needs {wanted}: run `debug-access db upgrade` first"
        )


def upgrade(engine: Engine) -> str:
    """Bring the database to head (see the module docstring); return the revision it is at."""
    with _schema_transaction(engine) as conn:
        return _migrate(conn)


def downgrade(engine: Engine, revision: str) -> str:
    """Take the schema back to ``revision`` (to roll back a release), under the same lock.

    Only a database Alembic manages can be downgraded, and only to a revision this release
    knows. A downgrade drops what later revisions added (columns, tables), with their data:
    take a backup first.
    """
    _check_known(revision)

    def run(conn: Connection) -> str:
        if _version(conn) is None:
            raise SchemaProblem("the database has no schema revision to downgrade from")
        command.downgrade(alembic_config(conn), revision)
        log.warning("database schema: downgraded to %s", revision)
        return revision

    with _schema_transaction(engine) as conn:
        return run(conn)


def differences(connection: Connection) -> list[Any]:
    """What differs between the models and the database (empty when a revision is complete).

    The same filter as the migrations: APScheduler's and Alembic's tables are not compared.
    """
    context = MigrationContext.configure(
        connection,
        opts={
            "include_name": include_name,
            "compare_type": True,
            "target_metadata": SQLModel.metadata,
        },
    )
    return list(compare_metadata(context, SQLModel.metadata))


def _version(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _migrate(conn: Connection) -> str:
    """Decide what the database is, then create, stamp or upgrade it; inside the caller's lock."""
    config = alembic_config(conn)
    before = _version(conn)
    if before is None and _has_baseline_tables(conn):
        _check_is_baseline(conn)
        command.stamp(config, BASELINE)
        before = BASELINE
        log.warning(
            "database schema: the tables made before migrations match the baseline; stamped at %s",
            BASELINE,
        )
    elif before is not None:
        _check_known(before)
    command.upgrade(config, "head")
    after = _version(conn)
    if after is None:  # pragma: no cover - alembic always writes the version row
        raise SchemaProblem("the upgrade left no alembic_version row")
    if before is None:
        log.info("database schema: created at %s", after)
    elif before != after:
        log.info("database schema: upgraded from %s to %s", before, after)
    return after


def _has_baseline_tables(conn: Connection) -> bool:
    tables = set(inspect(conn).get_table_names()) - NOT_OURS
    return bool(tables and tables & _baseline().tables)


def _check_known(revision: str) -> None:
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        raise SchemaProblem(
            f"the database is at schema revision {revision!r}, which this release does not "
            f"know (head is {head()!r}): a newer release migrated it; run that release or newer"
        ) from None


def _check_is_baseline(conn: Connection) -> None:
    """Refuse to stamp a database whose tables are not exactly the baseline's."""
    baseline = _baseline()
    found = _shape(conn, baseline.tables)
    missing = sorted(baseline.shape - found, key=_tables_first)
    unexpected = sorted(found - baseline.shape, key=_tables_first)
    if missing or unexpected:
        parts = [
            f"{label} {_first(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected))
            if items
        ]
        raise SchemaProblem(
            "the database has debug-access tables but no alembic_version, and they are not the "
            f"baseline schema ({'; '.join(parts)}); refusing to stamp it: restore it from a "
            "backup made by the last release, or fix it by hand to match the baseline"
        )


def _tables_first(item: str) -> tuple[bool, str]:
    return not item.startswith("table "), item


def _first(items: list[str], count: int = 5) -> str:
    return ", ".join(items[:count]) + (
        f" and {len(items) - count} more" if len(items) > count else ""
    )


class _Baseline(NamedTuple):
    tables: frozenset[str]
    shape: frozenset[str]


@functools.cache
def _baseline() -> _Baseline:
    """What the baseline revision makes, read back from a scratch in-memory SQLite database.

    The baseline revision is the one definition of "the tables before migrations": no second,
    hand-kept copy to drift from it.
    """
    scratch = create_engine("sqlite://", poolclass=StaticPool)
    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # "Running upgrade" here is not about the real database
    try:
        with scratch.begin() as conn:
            command.upgrade(alembic_config(conn), BASELINE)
            tables = frozenset(inspect(conn).get_table_names()) - NOT_OURS
            return _Baseline(tables, _shape(conn, tables))
    finally:
        quiet.setLevel(level)
        scratch.dispose()


def _shape(conn: Connection, tables: Iterable[str]) -> frozenset[str]:
    """Tables, columns (with nullability), keys and named indexes, comparable across dialects.

    Types are left out (SQLite and PostgreSQL name them differently) and so are the names of
    unnamed constraints (each database makes up its own).
    """
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    items: set[str] = set()
    for table in sorted(tables):
        if table not in present:
            continue
        items.add(f"table {table}")
        for column in inspector.get_columns(table):
            null = "null" if column["nullable"] else "not null"
            items.add(f"column {table}.{column['name']} ({null})")
        primary = inspector.get_pk_constraint(table)["constrained_columns"]
        items.add(f"primary key {table}({', '.join(primary)})")
        for unique in inspector.get_unique_constraints(table):
            items.add(f"unique {table}({', '.join(unique['column_names'])})")
        for foreign in inspector.get_foreign_keys(table):
            items.add(
                f"foreign key {table}({', '.join(foreign['constrained_columns'])}) -> "
                f"{foreign['referred_table']}({', '.join(foreign['referred_columns'])})"
            )
        for index in inspector.get_indexes(table):
            # Indexes behind unique constraints are listed above (PostgreSQL reports both).
            if index["name"] and not index.get("duplicates_constraint"):
                kind = "unique index" if index["unique"] else "index"
                columns = ", ".join(str(c) for c in index["column_names"])
                items.add(f"{kind} {index['name']} on {table}({columns})")
    return frozenset(items)


@contextmanager
def _schema_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction for a schema change, serialised across processes: under the advisory
    lock on PostgreSQL, the write lock on SQLite (see the module docstring)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            yield conn
    elif engine.dialect.name == "sqlite":
        with _sqlite_write_transaction(engine) as conn:
            yield conn
    else:
        with engine.begin() as conn:
            yield conn


@contextmanager
def _sqlite_write_transaction(engine: Engine) -> Iterator[Connection]:
    """One real SQLite transaction holding the write lock, with foreign keys off meanwhile.

    This is SQLite's own recipe for schema changes (batch mode copies tables, which must not
    trip or cascade foreign keys halfway), ending with ``PRAGMA foreign_key_check``. The
    driver is put in autocommit mode so that our ``BEGIN IMMEDIATE`` is the transaction.
    """
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        foreign_keys = bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaProblem(f"the upgrade broke foreign keys: {broken[:5]}")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        finally:
            if foreign_keys:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
