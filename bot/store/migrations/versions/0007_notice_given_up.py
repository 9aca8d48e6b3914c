"""The notice outbox gives up: a notice Slack refuses for good, or for a week, is set aside.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A last column on ``notice`` (``given_up_at``, empty for every existing row: each is still
retried, and given up by the running bot if it should be).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("notice") as batch:
        batch.add_column(sa.Column("given_up_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notice") as batch:
        batch.drop_column("given_up_at")
