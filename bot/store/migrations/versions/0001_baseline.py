"""Baseline: the tables exactly as ``SQLModel.metadata.create_all`` made them before migrations.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Databases made by those releases are stamped at this revision (``bot.store.schema``); new ones
are created by it. So it must never change: a later change to the models is a new revision.
Column order, constraints and index names are create_all's, and the unique constraints are
left unnamed as create_all left them, so PostgreSQL names them the same way in both kinds of
database (``grant_request_id_key``, …) and a later revision can refer to them by one name.
Types are plain SQLAlchemy types (SQLModel's ``AutoString`` renders as the same VARCHAR), so
this file does not depend on how SQLModel evolves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

ONE_PENDING_EXTENSION = "status = 'pending' AND parent_id IS NOT NULL"


def _when(name: str, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "access_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("requester", sa.String(length=32), nullable=False),
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("duration_seconds", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin_channel", sa.String(length=32), nullable=True),
        _when("created_at", nullable=False),
        _when("updated_at", nullable=False),
        sa.Column("decided_by", sa.String(length=32), nullable=True),
        _when("decided_at", nullable=True),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("break_glass", sa.Boolean(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=32), nullable=True),
        _when("reviewed_at", nullable=True),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("asked", sa.Text(), nullable=False),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("asked_sources", sa.Text(), nullable=False),
        sa.Column("routing_note", sa.Text(), nullable=True),
        _when("pending_until", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["parent_id"], ["access_request.id"]),
    )
    op.create_index("ix_access_request_parent_id", "access_request", ["parent_id"])
    op.create_index("ix_access_request_requester", "access_request", ["requester"])
    op.create_index("ix_access_request_resource", "access_request", ["resource"])
    op.create_index("ix_access_request_status", "access_request", ["status"])
    op.create_index(
        "ux_one_pending_extension",
        "access_request",
        ["parent_id"],
        unique=True,
        postgresql_where=sa.text(ONE_PENDING_EXTENSION),
        sqlite_where=sa.text(ONE_PENDING_EXTENSION),
    )

    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        _when("at", nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("resource", sa.String(length=64), nullable=True),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prev_hash"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index("ix_audit_event_action", "audit_event", ["action"])
    op.create_index("ix_audit_event_at", "audit_event", ["at"])
    op.create_index("ix_audit_event_request_id", "audit_event", ["request_id"])

    op.create_table(
        "audit_head",
        # A single row with id 1: create_all made a plain INTEGER key here, not a SERIAL one.
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )

    op.create_table(
        "digest_run",
        sa.Column("id", sa.Integer(), nullable=False),
        _when("window_end", nullable=False),
        _when("posted_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("window_end"),
    )

    op.create_table(
        "decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("approver", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        _when("decided_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "approver"),
        sa.ForeignKeyConstraint(["request_id"], ["access_request.id"]),
    )
    op.create_index("ix_decision_request_id", "decision", ["request_id"])

    op.create_table(
        "grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("token_accessor", sa.String(length=128), nullable=True),
        sa.Column("lease_id", sa.String(length=512), nullable=True),
        _when("issued_at", nullable=False),
        _when("expires_at", nullable=True),
        _when("claimed_at", nullable=True),
        _when("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("ended_by", sa.String(length=32), nullable=True),
        sa.Column("revoke_attempts", sa.Integer(), nullable=False),
        sa.Column("wrap_accessor", sa.String(length=128), nullable=True),
        _when("collect_by", nullable=True),
        sa.Column("collected", sa.Boolean(), nullable=True),
        _when("next_retry_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
        sa.ForeignKeyConstraint(["request_id"], ["access_request.id"]),
    )
    op.create_index("ix_grant_status", "grant", ["status"])
    op.create_index("ix_grant_expires_at", "grant", ["expires_at"])

    op.create_table(
        "request_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "ts"),
        sa.ForeignKeyConstraint(["request_id"], ["access_request.id"]),
    )
    op.create_index("ix_request_message_request_id", "request_message", ["request_id"])


def downgrade() -> None:
    # Below the baseline there is nothing but an empty database: undoing it would drop the
    # audit trail, which no command of this tool may do.
    raise NotImplementedError("the baseline revision cannot be downgraded")
