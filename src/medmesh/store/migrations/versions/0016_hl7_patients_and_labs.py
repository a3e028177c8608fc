"""hl7 patients and labs: patients.address and patients.phone, lab_result_details, sealed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 08:10:00

HL7 ADT messages carry the patient's address (PID-11) and phone (PID-13); both are sealed
with the patient's key like the name and birth date. Laboratory results (ORU^R01 with LOINC
OBX) keep their reference range and interpretation in lab_result_details; A40 merges are
recorded in patient_merges (what moved, for the undo) and patients.merged_into (issue 10).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("phone", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("merged_into", sa.String(36), nullable=True))
    op.create_table(
        "lab_result_details",
        sa.Column("observation_id", sa.String(36), nullable=False),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["observation_id"], ["observations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("observation_id"),
    )
    op.create_table(
        "patient_merges",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("survivor_id", sa.String(36), nullable=False),
        sa.Column("merged_id", sa.String(36), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merged_by", sa.String(200), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("moved", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["survivor_id"], ["patients.id"]),
        sa.ForeignKeyConstraint(["merged_id"], ["patients.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("patient_merges")
    op.drop_table("lab_result_details")
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("merged_into")
        batch_op.drop_column("phone")
        batch_op.drop_column("address")
