"""SSH certificate grants: the key a request signs, and the keys users register once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``access_request.public_key`` is nullable and added last, so rows written before it keep their
meaning (no key: a secret or token grant) and the column order matches ``create_all``'s.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("access_request") as batch:
        batch.add_column(sa.Column("public_key", sa.Text(), nullable=True))
    op.create_table(
        "ssh_public_key",
        sa.Column("user", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user"),
    )


def downgrade() -> None:
    op.drop_table("ssh_public_key")
    with op.batch_alter_table("access_request") as batch:
        batch.drop_column("public_key")
