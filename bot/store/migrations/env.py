"""Alembic environment, run only through ``bot.store.schema`` (there is no alembic.ini).

The caller hands over an open connection in ``config.attributes["connection"]``, already
inside the transaction (and, on PostgreSQL, the advisory lock) it wants the migration to run
in, so that ``schema.upgrade`` decides about atomicity and locking, not this file. Offline
mode (``--sql``) renders a script from ``sqlalchemy.url``, for a DBA who wants to read it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from bot.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from bot.store.schema import include_name

target_metadata = SQLModel.metadata


def run_offline() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        include_name=include_name,
        render_as_batch=str(url).startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        # schema.upgrade runs SQLite's migrations inside BEGIN IMMEDIATE: DDL there is
        # transactional too (only the Python driver's default mode hides it).
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through bot.store.schema, which passes a connection")
    run_online(connection)
