"""Passkey step-up: registered passkeys and single-use links to the passkey page.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Two new tables. One passkey per person (a unique index on ``user``: two registrations finished
at the same moment cannot both be kept). Only public keys and hashes of link tokens are stored:
a link token is a bearer secret and never reaches the database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "passkey_credential",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=32), nullable=False),
        sa.Column("credential_id", sa.String(length=1024), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("sign_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("credential_id"),
    )
    op.create_index(op.f("ix_passkey_credential_user"), "passkey_credential", ["user"], unique=True)
    op.create_table(
        "step_up_link",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("user", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("challenge", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
        sa.ForeignKeyConstraint(["request_id"], ["access_request.id"]),
    )
    op.create_index(
        op.f("ix_step_up_link_request_id"), "step_up_link", ["request_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_step_up_link_request_id"), table_name="step_up_link")
    op.drop_table("step_up_link")
    op.drop_index(op.f("ix_passkey_credential_user"), table_name="passkey_credential")
    op.drop_table("passkey_credential")
