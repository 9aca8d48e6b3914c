"""User locks (the admins' kill switch, kept across restarts) and the notice outbox's kinds.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

A new table, and a last column on ``notice`` (``kind``, ``dm`` for every existing row: what each
was). At most one standing lock per user, enforced by a partial unique index (PostgreSQL and
SQLite both have them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("notice") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="dm", nullable=False)
        )
    op.create_table(
        "user_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("locked_by", sa.String(length=32), nullable=False),
        sa.Column("locked_via", sa.String(length=16), nullable=False),
        sa.Column("locked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(length=32), nullable=True),
        sa.Column("lifted_via", sa.String(length=16), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_one_standing_lock",
        "user_lock",
        ["user"],
        unique=True,
        postgresql_where=sa.text("lifted_at IS NULL"),
        sqlite_where=sa.text("lifted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_one_standing_lock", table_name="user_lock")
    op.drop_table("user_lock")
    with op.batch_alter_table("notice") as batch:
        batch.drop_column("kind")
