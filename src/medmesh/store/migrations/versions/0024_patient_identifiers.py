"""patient_identifiers: a patient's other identifiers (HL7 PID-3 repetitions beyond the one
they were registered under: another assigning authority's MRN, a national id)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-04 12:10:00

Each found by its blind index like the patient's own (patients.identifier_index), the value
sealed with the patient's key. Existing patients have none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_identifiers",
        sa.Column("identifier_index", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("system", sa.String(length=200), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_identifiers_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("identifier_index", name=op.f("pk_patient_identifiers")),
    )
    op.create_index(
        op.f("ix_patient_identifiers_patient_id"), "patient_identifiers", ["patient_id"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_patient_identifiers_patient_id"), table_name="patient_identifiers")
    op.drop_table("patient_identifiers")
