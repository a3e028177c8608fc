"""sessions end on the server: users.session_epoch

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 04:50:00

A web session carries the epoch of its account when it began; signing out, a password reset,
disabling the account and a lockout raise the epoch, which ends every session made before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
