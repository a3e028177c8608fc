"""observations: the owner checks once a batch, not once a row (PostgreSQL; SQLite unchanged)

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-05 19:20:00

Two foreign keys (to patients and to devices) made PostgreSQL look up and key-share-lock the
patient's and the device's rows for every reading stored, and the dedupe key
(device_id, message_id, effective) kept a fourth index that says what the primary key
(id, effective) says already: an observation's id is the uuid5 of its device and message id
(domain/reading.py), so the same device and message always give the same id. Together they were
about 40 % of PostgreSQL's CPU a reading (docs/benchmarks.md, "PostgreSQL's part of a
reading").

They go. Ingest takes the same key-share locks itself, once for each patient and device of a
batch, and refuses the batch if one is missing (store/observation_owners.py); erasure takes
the patient's row FOR UPDATE first, so no batch stores a reading for a patient being erased.
The primary key still refuses a second copy of a reading.
"""

from __future__ import annotations

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for constraint in (
        "fk_observations_patient_id_patients",
        "fk_observations_device_id_devices",
        "uq_observations_device_id_message_id",
    ):
        op.execute(f"ALTER TABLE observations DROP CONSTRAINT {constraint}")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "ALTER TABLE observations ADD CONSTRAINT uq_observations_device_id_message_id "
        "UNIQUE (device_id, message_id, effective)"
    )
    op.execute(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_patient_id_patients "
        "FOREIGN KEY (patient_id) REFERENCES patients (id)"
    )
    op.execute(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_device_id_devices "
        "FOREIGN KEY (device_id) REFERENCES devices (id)"
    )
