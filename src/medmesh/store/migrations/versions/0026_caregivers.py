"""caregivers: invitations and the links of a patient's caregivers

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-04 12:00:00

A patient invites a caregiver with a single-use code (stored as its SHA-256 hash); accepting
makes the caregiver's account, a consent naming it (RelatedPerson) and the link, which holds
the severities the caregiver is paged for. Neither table holds health data.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def _fk(table: str, column: str, other: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{other}.id"], name=f"fk_{table}_{column}_{other}")


def upgrade() -> None:
    op.create_table(
        "caregiver_invitations",
        sa.Column("id", sa.String(36)),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("alert_types", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME, nullable=True),
        _fk("caregiver_invitations", "patient_id", "patients"),
        sa.PrimaryKeyConstraint("id", name="pk_caregiver_invitations"),
        sa.UniqueConstraint("code_hash", name="uq_caregiver_invitations_code_hash"),
    )
    op.create_index("ix_caregiver_invitations_patient_id", "caregiver_invitations", ["patient_id"])
    op.create_table(
        "caregivers",
        sa.Column("id", sa.String(36)),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("consent_id", sa.String(36), nullable=False),
        sa.Column("alert_types", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("revoked_at", _TIME, nullable=True),
        _fk("caregivers", "patient_id", "patients"),
        _fk("caregivers", "user_id", "users"),
        _fk("caregivers", "consent_id", "consents"),
        sa.PrimaryKeyConstraint("id", name="pk_caregivers"),
    )
    op.create_index("ix_caregivers_patient_id", "caregivers", ["patient_id"])
    op.create_index("ix_caregivers_user_id", "caregivers", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_caregivers_user_id", "caregivers")
    op.drop_index("ix_caregivers_patient_id", "caregivers")
    op.drop_table("caregivers")
    op.drop_index("ix_caregiver_invitations_patient_id", "caregiver_invitations")
    op.drop_table("caregiver_invitations")
