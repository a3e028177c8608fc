"""perf-charts: sealed per-minute and per-hour rollups of readings, for long charts

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 08:00:00

Ingest keeps the rollups current (store/rollups.py). Readings stored before this migration are
folded in by `medmesh db backfill-rollups` (their values are sealed, and a migration holds no
patient keys): run it once after upgrading, or long charts show only what arrived since.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "observation_rollups",
        sa.Column("patient_id", sa.String(length=36), nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("component", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("stats", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_observation_rollups_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint(
            "patient_id",
            "code",
            "component",
            "resolution",
            "bucket",
            name=op.f("pk_observation_rollups"),
        ),
    )


def downgrade() -> None:
    op.drop_table("observation_rollups")
