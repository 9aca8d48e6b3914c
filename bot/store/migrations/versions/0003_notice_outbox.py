"""Notices: an outbox of messages a person must get even when Slack is down at the time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A new table only; existing rows are untouched. (A grant's new ``delivering`` status needs no
change: statuses are plain strings.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "notice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["request_id"], ["access_request.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notice_request_id", "notice", ["request_id"], unique=False)
    op.create_index("ix_notice_next_attempt_at", "notice", ["next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_notice_next_attempt_at", table_name="notice")
    op.drop_index("ix_notice_request_id", table_name="notice")
    op.drop_table("notice")
