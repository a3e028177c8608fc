"""pending evaluation patients: the patients of a committed batch not judged yet

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04 14:40:00

Each pending batch names its patients and their readings in it, so that the rules judging a
patient read what other batches (another process's, or queued behind) committed for that
patient and not judged yet, as judging from the stored history did. Rows go with their
pending batch (ON DELETE CASCADE) and with the patient at erasure. Batches pending when the
upgrade runs have no rows here: they are judged as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_evaluation_patients",
        sa.Column("pending_id", sa.String(length=36), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("observation_ids", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pending_id"],
            ["pending_evaluations.id"],
            name=op.f("fk_pending_evaluation_patients_pending_id_pending_evaluations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_pending_evaluation_patients_patient_id_patients"),
        ),
        sa.PrimaryKeyConstraint(
            "pending_id", "patient_id", name=op.f("pk_pending_evaluation_patients")
        ),
    )
    op.create_index(
        op.f("ix_pending_evaluation_patients_patient_id"),
        "pending_evaluation_patients",
        ["patient_id"],
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_pending_evaluation_patients_patient_id"), table_name="pending_evaluation_patients"
    )
    op.drop_table("pending_evaluation_patients")
