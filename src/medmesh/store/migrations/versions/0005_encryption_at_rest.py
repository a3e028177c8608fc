"""encryption at rest: health data columns hold AES-256-GCM ciphertext; blind identifier index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 22:40:00

The data keys are not in this database (crypto/keystore.py), so this migration cannot encrypt
existing plaintext rows: it refuses to run on a database that holds patients or dead letters,
with a message saying so. Nothing had been released with plaintext storage.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


class PlaintextRowsPresent(RuntimeError):
    """The database holds health data stored before encryption at rest."""


def _refuse_if_not_empty() -> None:
    bind = op.get_bind()
    for table in ("patients", "dead_letters"):
        count = bind.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar()
        if count:
            raise PlaintextRowsPresent(
                f"migration 0005 (encryption at rest) found {count} rows in {table} stored in "
                "plaintext; it cannot encrypt them in place. Export what you need, then start "
                "from an empty database (or drop the old one): see docs/encryption.md"
            )


def _replace_column(table: str, column: sa.Column[Any]) -> None:
    # Drop and add rather than ALTER TYPE: float/text do not cast to bytea, and the table is
    # empty (checked above).
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_column(column.name)
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.add_column(column)


def upgrade() -> None:
    _refuse_if_not_empty()
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint("uq_patients_identifier_system_identifier_value", type_="unique")
    for name, nullable in (
        ("identifier_value", False),
        ("family", False),
        ("given", False),
        ("birth_date", True),
    ):
        _replace_column("patients", sa.Column(name, sa.LargeBinary(), nullable=nullable))
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identifier_index", sa.String(length=64), nullable=False))
        batch_op.create_unique_constraint(
            batch_op.f("uq_patients_identifier_index"), ["identifier_index"]
        )
    _replace_column("observations", sa.Column("value", sa.LargeBinary(), nullable=True))
    _replace_column("observation_components", sa.Column("value", sa.LargeBinary(), nullable=False))
    _replace_column("alerts", sa.Column("detail", sa.LargeBinary(), nullable=False))


def downgrade() -> None:
    _refuse_if_not_empty()
    _replace_column("alerts", sa.Column("detail", sa.Text(), nullable=False))
    _replace_column("observation_components", sa.Column("value", sa.Float(), nullable=False))
    _replace_column("observations", sa.Column("value", sa.Float(), nullable=True))
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_patients_identifier_index"), type_="unique")
        batch_op.drop_column("identifier_index")
    _replace_column("patients", sa.Column("birth_date", sa.Date(), nullable=True))
    for name, size in (("given", 100), ("family", 100), ("identifier_value", 100)):
        _replace_column("patients", sa.Column(name, sa.String(length=size), nullable=False))
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            "uq_patients_identifier_system_identifier_value",
            ["identifier_system", "identifier_value"],
        )
