"""perf-charts: observations partitioned by month on PostgreSQL (SQLite unchanged)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 08:10:00

The table is rebuilt as a declarative range partition on `effective` (monthly partitions from
the oldest reading's month to three months ahead, and a default partition), its rows copied,
and the old table dropped, in the migration's one transaction. Cost: the whole table is copied
and its indexes rebuilt while ingest waits on the lock; docs/scaling.md gives the figures.

A unique index of a partitioned table must hold the partition key: the primary key becomes
(id, effective) and the dedupe key (device_id, message_id, effective). A redelivered message
carries its own time, so it still lands on the stored row. No table can reference
observations(id) alone any more: those foreign keys go (components' and any other's); erasure
deletes those rows explicitly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op
from sqlalchemy import text

from medmesh.store.partitions import (
    DEFAULT,
    MONTHS_AHEAD,
    add_months,
    month_start,
    partition_name,
)

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_COLUMNS = """
    id VARCHAR(36) NOT NULL,
    patient_id VARCHAR(36) NOT NULL,
    device_id VARCHAR(36) NOT NULL,
    message_id VARCHAR(128) NOT NULL,
    code VARCHAR(16) NOT NULL,
    effective TIMESTAMP WITH TIME ZONE NOT NULL,
    value BYTEA,
    unit VARCHAR(16),
    received_at TIMESTAMP WITH TIME ZONE NOT NULL
"""
_FIELDS = "id, patient_id, device_id, message_id, code, effective, value, unit, received_at"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    run = op.execute
    # Every foreign key to observations(id) goes (components', and any later table's): none can
    # reference a partitioned table's id alone. Their rows are deleted explicitly by erasure.
    referencing = op.get_bind().execute(
        text(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'observations'::regclass"
        )
    )
    for table, constraint in referencing.all():
        run(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
    run("ALTER TABLE observations RENAME TO observations_unpartitioned")
    for old in ("pk_observations", "uq_observations_device_id_message_id"):
        run(f"ALTER TABLE observations_unpartitioned RENAME CONSTRAINT {old} TO {old}_old")
    for old in (
        "ix_observations_patient_id_code_effective",
        "ix_observations_patient_id_effective",
    ):
        run(f"ALTER INDEX {old} RENAME TO {old}_old")
    for fk in ("fk_observations_patient_id_patients", "fk_observations_device_id_devices"):
        run(f"ALTER TABLE observations_unpartitioned RENAME CONSTRAINT {fk} TO {fk}_old")
    run(f"CREATE TABLE observations ({_COLUMNS}) PARTITION BY RANGE (effective)")
    run("ALTER TABLE observations ADD CONSTRAINT pk_observations PRIMARY KEY (id, effective)")
    run(
        "ALTER TABLE observations ADD CONSTRAINT uq_observations_device_id_message_id "
        "UNIQUE (device_id, message_id, effective)"
    )
    run(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_patient_id_patients "
        "FOREIGN KEY (patient_id) REFERENCES patients (id)"
    )
    run(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_device_id_devices "
        "FOREIGN KEY (device_id) REFERENCES devices (id)"
    )
    run(
        "CREATE INDEX ix_observations_patient_id_code_effective "
        "ON observations (patient_id, code, effective)"
    )
    run("CREATE INDEX ix_observations_patient_id_effective ON observations (patient_id, effective)")
    run(f"CREATE TABLE {DEFAULT} PARTITION OF observations DEFAULT")
    now = datetime.now(UTC)
    oldest = op.get_bind().execute(text("SELECT min(effective) FROM observations_unpartitioned"))
    first = month_start(min(oldest.scalar_one() or now, now).astimezone(UTC))
    month = first
    last = add_months(month_start(now), MONTHS_AHEAD)
    while month <= last:
        end = add_months(month, 1)
        run(
            f"CREATE TABLE {partition_name(month)} PARTITION OF observations "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
        )
        month = end
    run(
        f"INSERT INTO observations SELECT {_FIELDS} FROM observations_unpartitioned"  # noqa: S608  (constant names)
    )
    run("DROP TABLE observations_unpartitioned")
    run("ANALYZE observations")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    run = op.execute
    run("ALTER TABLE observations RENAME TO observations_partitioned")
    for old in (
        "pk_observations",
        "uq_observations_device_id_message_id",
        "fk_observations_patient_id_patients",
        "fk_observations_device_id_devices",
    ):
        run(f"ALTER TABLE observations_partitioned RENAME CONSTRAINT {old} TO {old}_part")
    for old in (
        "ix_observations_patient_id_code_effective",
        "ix_observations_patient_id_effective",
    ):
        run(f"ALTER INDEX {old} RENAME TO {old}_part")
    run(f"CREATE TABLE observations ({_COLUMNS})")
    run("ALTER TABLE observations ADD CONSTRAINT pk_observations PRIMARY KEY (id)")
    run(
        "ALTER TABLE observations ADD CONSTRAINT uq_observations_device_id_message_id "
        "UNIQUE (device_id, message_id)"
    )
    run(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_patient_id_patients "
        "FOREIGN KEY (patient_id) REFERENCES patients (id)"
    )
    run(
        "ALTER TABLE observations ADD CONSTRAINT fk_observations_device_id_devices "
        "FOREIGN KEY (device_id) REFERENCES devices (id)"
    )
    run(
        "CREATE INDEX ix_observations_patient_id_code_effective "
        "ON observations (patient_id, code, effective)"
    )
    run("CREATE INDEX ix_observations_patient_id_effective ON observations (patient_id, effective)")
    run(
        f"INSERT INTO observations SELECT {_FIELDS} FROM observations_partitioned"  # noqa: S608  (constant names)
    )
    run("DROP TABLE observations_partitioned CASCADE")
    run(
        "ALTER TABLE observation_components ADD CONSTRAINT "
        "fk_observation_components_observation_id_observations FOREIGN KEY (observation_id) "
        "REFERENCES observations (id) ON DELETE CASCADE"
    )
