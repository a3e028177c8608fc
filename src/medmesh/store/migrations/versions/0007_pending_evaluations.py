"""pending evaluations: committed batches whose alert rules and events have not run yet

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 05:00:00

Readings are acknowledged once committed and judged after; a row here outlives a process that
dies in between, so another (or the restarted) process judges the batch (docs/architecture.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_evaluations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("observation_ids", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_pending_evaluations_created_at", "pending_evaluations", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_pending_evaluations_created_at", table_name="pending_evaluations")
    op.drop_table("pending_evaluations")
