"""shared bedside monitors: devices.shared_monitor

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 05:00:00

Over HL7 a shared monitor's patient comes from PID; any other device's from its assignment
(issue 16). Existing devices become ordinary devices: a bedside monitor that relied on PID
must be marked again (docs/hl7.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shared_monitor", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("shared_monitor")
