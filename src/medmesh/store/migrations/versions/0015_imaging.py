"""imaging: DICOM studies, series, instances (sealed files) and the quarantine

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 08:30:00

Files and the descriptive header fields are sealed with the patient's data key; quarantined
files with a key of their own (docs/imaging.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imaging_studies",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("modalities", sa.String(128), nullable=False),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_imaging_studies_patient_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_imaging_studies"),
        sa.UniqueConstraint("study_uid", name="uq_imaging_studies_study_uid"),
    )
    op.create_index(
        "ix_imaging_studies_patient_id_started_at", "imaging_studies", ["patient_id", "started_at"]
    )
    op.create_table(
        "imaging_series",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("study_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("detail", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["imaging_studies.id"], name="fk_imaging_series_study_id_imaging_studies"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_imaging_series_patient_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_imaging_series"),
        sa.UniqueConstraint("series_uid", name="uq_imaging_series_series_uid"),
    )
    op.create_index("ix_imaging_series_study_id", "imaging_series", ["study_id"])
    op.create_index("ix_imaging_series_patient_id", "imaging_series", ["patient_id"])
    op.create_table(
        "imaging_instances",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("series_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("slice_position", sa.Float(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("transfer_syntax", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["imaging_series.id"],
            name="fk_imaging_instances_series_id_imaging_series",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name="fk_imaging_instances_patient_id_patients"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_imaging_instances"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_imaging_instances_sop_instance_uid"),
    )
    op.create_index("ix_imaging_instances_series_id", "imaging_instances", ["series_id"])
    op.create_index("ix_imaging_instances_patient_id", "imaging_instances", ["patient_id"])
    op.create_table(
        "imaging_quarantine",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("source", sa.String(80), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("decided_by", sa.String(36), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_imaging_quarantine"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_imaging_quarantine_sop_instance_uid"),
    )
    op.create_index(
        "ix_imaging_quarantine_status_received_at",
        "imaging_quarantine",
        ["status", "received_at"],
    )


def downgrade() -> None:
    op.drop_table("imaging_quarantine")
    op.drop_table("imaging_instances")
    op.drop_table("imaging_series")
    op.drop_table("imaging_studies")
