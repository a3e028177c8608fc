"""medications and refill requests

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 06:30:00

What a medication is (name, RxNorm code, dosage) and the notes around a refill are sealed with
the patient's data key (docs/care.md). A partial unique index keeps one open refill request per
medication.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "medications",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.Column("refills", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requester_id", sa.String(36), nullable=False),
        sa.Column("requester_name", sa.String(200), nullable=False),
        sa.Column("authored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prior_id", sa.String(36), nullable=True),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_medications_patient_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_medications"),
    )
    op.create_index("ix_medications_patient_id_status", "medications", ["patient_id", "status"])
    op.create_table(
        "refill_requests",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("medication_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.LargeBinary(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requested_by", sa.String(36), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(36), nullable=True),
        sa.Column("decided_by_name", sa.String(200), nullable=True),
        sa.Column("reason", sa.LargeBinary(), nullable=True),
        sa.Column("renewal_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_refill_requests_patient_id_patients"
        ),
        sa.ForeignKeyConstraint(
            ["medication_id"],
            ["medications.id"],
            name="fk_refill_requests_medication_id_medications",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_refill_requests"),
    )
    op.create_index(
        "ix_refill_requests_status_requested_at", "refill_requests", ["status", "requested_at"]
    )
    op.create_index("ix_refill_requests_patient_id", "refill_requests", ["patient_id"])
    op.create_index(
        "ix_refill_requests_one_open",
        "refill_requests",
        ["medication_id"],
        unique=True,
        sqlite_where=sa.text("status = 'open'"),
        postgresql_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_table("refill_requests")
    op.drop_table("medications")
