"""rule state segments: a rule state's readings stored by minute, appended per batch

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-04 11:40:00

A batch appends the readings it added instead of rewriting the patient's whole state (1.35 MB
for a 1 Hz monitor); `rule_states.state` keeps only the head (horizon, generation). Existing
states are in the old format, which the new code does not read: they are deleted, and each
patient's next batch rebuilds its state from the stored history (docs/alerts.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rule_state_segments",
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_rule_state_segments_patient_id_patients"),
        ),
        sa.PrimaryKeyConstraint(
            "patient_id", "version", "bucket", name=op.f("pk_rule_state_segments")
        ),
    )
    op.execute("DELETE FROM rule_states")


def downgrade() -> None:
    op.drop_table("rule_state_segments")
    op.execute("DELETE FROM rule_states")
