"""Timers driven by the database: when a request last escalated, and the hold a replica's timer
tick puts on a row while it works on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Every other due time was a column already; the next escalation is due ``escalate_after`` after
the last tier was asked, which ``access_request.escalated_at`` records (empty for rows written
before it: they count from ``created_at``, as before). ``next_attempt_at`` on ``access_request``
and ``grant`` is the timers' hold (``bot.store.due``); empty means nobody holds the row. All
three are nullable and added last, so the column order matches ``create_all``'s. The last
release's ``apscheduler_jobs`` table is not ours and is left as it is.
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = (
    ("access_request", "escalated_at"),
    ("access_request", "next_attempt_at"),
    ("grant", "next_attempt_at"),
)


def upgrade() -> None:
    for table in ("access_request", "grant"):
        with op.batch_alter_table(table) as batch:
            for name in (c for t, c in COLUMNS if t == table):
                batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place. Batch mode would copy the table instead, and the
    # copy of "grant" lists its unique and foreign key constraints in no fixed order.
    bind = op.get_bind()
    in_place = bind.dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 35)
    for table, name in reversed(COLUMNS):
        if in_place:
            op.drop_column(table, name)
        else:
            with op.batch_alter_table(table) as batch:
                batch.drop_column(name)
