"""Step-up links count refused passkey answers, and are spent after a few.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

A last column on ``step_up_link`` (``refusals``, 0 for every existing link).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("step_up_link") as batch:
        batch.add_column(sa.Column("refusals", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("step_up_link") as batch:
        batch.drop_column("refusals")
