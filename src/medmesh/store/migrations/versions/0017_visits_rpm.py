"""visits and rpm: video visits (sealed note), clinician time entries and their revisions

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _patient_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["patient_id"], ["patients.id"], name=f"fk_{table}_patient_id_patients"
    )


def upgrade() -> None:
    op.create_table(
        "visits",
        sa.Column("appointment_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("clinician_id", sa.String(36), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("admitted_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("note", sa.LargeBinary(), nullable=True),
        sa.Column("note_updated_at", _TS, nullable=True),
        sa.Column("chat_thread_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["appointment_id"],
            ["appointments.id"],
            name="fk_visits_appointment_id_appointments",
        ),
        _patient_fk("visits"),
        sa.PrimaryKeyConstraint("appointment_id", name="pk_visits"),
    )
    op.create_index("ix_visits_patient_id_started_at", "visits", ["patient_id", "started_at"])
    op.create_table(
        "time_entries",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("clinician_id", sa.String(36), nullable=False),
        sa.Column("clinician_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start", _TS, nullable=False),
        sa.Column("end", _TS, nullable=False),
        sa.Column("interactive", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.LargeBinary(), nullable=True),
        sa.Column("source_id", sa.String(36), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.String(36), nullable=False),
        _patient_fk("time_entries"),
        sa.PrimaryKeyConstraint("id", name="pk_time_entries"),
    )
    op.create_index("ix_time_entries_patient_id_start", "time_entries", ["patient_id", "start"])
    op.create_index("ix_time_entries_clinician_id_start", "time_entries", ["clinician_id", "start"])
    op.create_table(
        "time_entry_revisions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("entry_id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(36), nullable=False),
        sa.Column("changed_by", sa.String(36), nullable=False),
        sa.Column("changed_at", _TS, nullable=False),
        sa.Column("before", sa.LargeBinary(), nullable=False),
        _patient_fk("time_entry_revisions"),
        sa.PrimaryKeyConstraint("id", name="pk_time_entry_revisions"),
    )
    op.create_index(
        "ix_time_entry_revisions_entry_id_changed_at",
        "time_entry_revisions",
        ["entry_id", "changed_at"],
    )


def downgrade() -> None:
    op.drop_table("time_entry_revisions")
    op.drop_table("time_entries")
    op.drop_table("visits")
